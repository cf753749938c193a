"""Time one source tree's default model the way `dgno bench --speed` does, for a before/after table.

    PYTHONPATH=/path/to/other/checkout/src python scripts/speed_before_after.py

Why a script and not the bench: the code before the speed work has no `--speed`; this measures only
what both trees have (the public `deblur` and the network's `forward_multiscale`).
"""

import time

import numpy as np
import torch

import napari_dgno
from napari_dgno import deblur, load_model
from napari_dgno.train.losses import multiscale_l1_fft


def best_of(fn, repeats=2):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    model = load_model(device="cpu")
    rng = np.random.default_rng(0)
    print(f"tree: {napari_dgno.__file__}; threads {torch.get_num_threads()}")
    deblur(rng.random((128, 128), dtype=np.float32), model)
    for size, tile in [(512, 512), (2048, "auto")]:
        image = rng.random((size, size), dtype=np.float32) * 4000
        seconds = best_of(
            lambda image=image, tile=tile: deblur(image, model, tile=tile), 2 if size <= 512 else 1
        )
        print(f"{size}² tile={tile}: {seconds:.2f} s, {size * size / seconds / 1e6:.3f} Mpx/s")
    net = model.net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4)
    blurred, sharp = torch.rand(16, 1, 128, 128), torch.rand(16, 1, 128, 128)

    def step():
        optimiser.zero_grad(set_to_none=True)
        multiscale_l1_fft(net.forward_multiscale(blurred), sharp, 0.01).backward()
        optimiser.step()

    step()
    print(f"train step (16 x 128²): {best_of(step, 3):.2f} s")


if __name__ == "__main__":
    main()
