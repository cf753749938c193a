"""How far tiled output is from whole-image output for the shipped default (or ``--model``).

A 1024² mosaic of the shipped sample (its 8 rotations / mirror images) is restored whole and with each
tile size; prints the largest and the 99.9th-percentile difference as % of the output range, 32 px
away from the border (what ``tests/test_tiling_shipped.py`` asserts for auto, 256 and 512).

    python scripts/tiling_agreement.py [--model NAME|PATH] [--tiles 256,384,512,auto]
"""

import argparse

import numpy as np
import torch

from napari_dgno import DeblurOptions, load_model
from napari_dgno.inference.engine import restore
from napari_dgno.samples import load_defocused_nuclei


def mosaic() -> np.ndarray:
    blurred = load_defocused_nuclei()["blurred"].astype(np.float32)
    views = [np.rot90(blurred, k) for k in range(4)] + [np.rot90(blurred.T, k) for k in range(4)]
    side = 1024 // blurred.shape[0] + 1
    rows = [np.hstack([views[(side * r + c) % 8] for c in range(side)]) for r in range(side)]
    return np.ascontiguousarray(np.vstack(rows)[:1024, :1024])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--tiles", default="256,384,512,auto")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    image = mosaic()
    whole, _ = restore(image, model, DeblurOptions(tile=1024, device="cpu"))
    span = float(whole.max() - whole.min())
    for tile in args.tiles.split(","):
        tile = tile if tile == "auto" else int(tile)
        tiled, report = restore(image, model, DeblurOptions(tile=tile, device="cpu"))
        d = np.abs(tiled - whole)[32:-32, 32:-32] / span
        print(
            f"tile {tile} (ran {report.tile} px, overlap {report.overlap}): max {100 * d.max():.3f} %, "
            f"99.9th percentile {100 * np.percentile(d, 99.9):.3f} % of the range"
        )


if __name__ == "__main__":
    main()
