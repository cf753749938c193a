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
    """A 4x4 mosaic of the shipped sample (real nuclei, real blur) and its whole-image restoration."""
    torch.set_num_threads(2)
    blurred = load_defocused_nuclei()["blurred"].astype(np.float32)  # 269², so the mosaic is 1076²
    views = [np.rot90(blurred, k) for k in range(4)] + [np.rot90(blurred.T, k) for k in range(4)]
    mosaic = np.vstack([np.hstack([views[(4 * r + c) % 8] for c in range(4)]) for r in range(4)])
    model = load_model(device="cpu")
    return model, mosaic, deblur(mosaic, model, tile=max(mosaic.shape), device="cpu")  # one tile


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tile", "max_bound"),
    # Tiles of 512 px and more stay within the 0.5 %. A 256-px request runs as 384 px (the
    # network's minimum); its largest difference, 0.8-0.9 % at a few pixels, comes from the score-sorted
    # scans: a sort is discontinuous, so a change of 1e-5 far away can swap two tokens' order. Its
    # 99.9th percentile is about 0.1 %. Measured: python scripts/tiling_agreement.py
    [("auto", 0.005), (512, 0.005), (256, 0.015)],
)
def test_whole_and_tiled_agree_on_the_shipped_default(mosaic_and_whole, tile, max_bound):
    model, mosaic, whole = mosaic_and_whole
    tiled = deblur(mosaic, model, tile=tile, device="cpu")
    span = float(whole.max() - whole.min())
    inner = (slice(32, -32), slice(32, -32))
    diff = np.abs(tiled - whole)[inner] / span
    worst, p999 = float(diff.max()), float(np.percentile(diff, 99.9))
    assert worst < max_bound, f"tile {tile}: whole and tiled differ by {100 * worst:.2f} % of the range"
    assert p999 < 0.005, f"tile {tile}: 0.1 % of pixels differ by over {100 * p999:.2f} % of the range"


def test_a_tile_below_the_reach_is_raised_and_said(mosaic_and_whole):
    model, mosaic, _ = mosaic_and_whole
    assert model.net.min_tile() == 384
    _, report = restore(mosaic[:512, :512], model, DeblurOptions(tile=128, device="cpu"))
    assert report.tile == 384 and report.overlap == 192
