"""Time the Kernel / PSF overlay as the dock runs it, for one source tree and its default model.

    PYTHONPATH=<checkout>/src python scripts/overlay_timing.py [--threads 2] [--element-size 16]

Why a script: the before/after of the overlay work compares two checkouts (code and shipped model),
and only the public ``compute_overlays(model, image, element_size)`` exists in both. A warm-up on a
small crop loads everything first, so the time is the overlay's, not the imports'.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real" / "bbbc006_z00_a19_s2.tif"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REAL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--element-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cold", action="store_true", help="no warm-up: a dock's first overlay")
    parser.add_argument("--main-thread", action="store_true", help="not in a worker thread as the dock")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import napari_dgno
    from napari_dgno import load_model
    from napari_dgno.overlays import compute_overlays

    model = load_model(device="cpu")
    image = tifffile.imread(args.image).astype(np.float32)
    if not args.cold:
        compute_overlays(model, image[:128, :128], args.element_size)  # warm-up: imports, caches
    times = []

    def run():
        for _ in range(args.repeats):
            started = time.perf_counter()
            compute_overlays(model, image, args.element_size)
            times.append(time.perf_counter() - started)

    if args.main_thread:
        run()
    else:  # the dock computes in a worker thread (whose memory arena differs from the main thread's)
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    print(
        f"tree {Path(napari_dgno.__file__).parent}; {args.image.name} {image.shape[1]}x{image.shape[0]}, "
        f"element size {args.element_size}, {args.threads} threads, {'cold' if args.cold else 'warm'}, "
        f"{'main' if args.main_thread else 'worker'} thread: "
        f"{min(times):.1f} s"
    )


if __name__ == "__main__":
    main()
