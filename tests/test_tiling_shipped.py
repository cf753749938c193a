"""The shipped default gives the same answer whole and tiled (issue 9): its reach is bounded and tiles
sit on its grid. Measured on the shipped weights, not a random network: a trained network can amplify
what a random one hides."""

import numpy as np
import pytest
import torch

from napari_dgno import DeblurOptions, deblur, load_model
from napari_dgno.inference.engine import restore
from napari_dgno.samples import load_defocused_nuclei


@pytest.fixture(scope="module")
def mosaic_and_whole():
    """A 1024² mosaic of the shipped sample (real nuclei, real blur) and its whole-image restoration."""
    torch.set_num_threads(2)
    blurred = load_defocused_nuclei()["blurred"].astype(np.float32)  # 256²
    views = [np.rot90(blurred, k) for k in range(4)] + [np.rot90(blurred.T, k) for k in range(4)]
    mosaic = np.vstack([np.hstack([views[(4 * r + c) % 8] for c in range(4)]) for r in range(4)])
    model = load_model(device="cpu")
    return model, mosaic, deblur(mosaic, model, tile=1024, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("tile", ["auto", 256, 512])
def test_whole_and_tiled_agree_on_the_shipped_default(mosaic_and_whole, tile):
    model, mosaic, whole = mosaic_and_whole
    tiled = deblur(mosaic, model, tile=tile, device="cpu")
    span = float(whole.max() - whole.min())
    inner = (slice(32, -32), slice(32, -32))
    worst = float(np.abs(tiled - whole)[inner].max()) / span
    assert worst < 0.005, f"tile {tile}: whole and tiled differ by {100 * worst:.2f} % of the range"


def test_a_tile_below_the_reach_is_raised_and_said(mosaic_and_whole):
    model, mosaic, _ = mosaic_and_whole
    assert model.net.min_tile() == 384
    _, report = restore(mosaic[:512, :512], model, DeblurOptions(tile=128, device="cpu"))
    assert report.tile == 384 and report.overlap == 192
