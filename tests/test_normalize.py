"""Normalisation per plane by default, and stack fits that sample every plane (issue 11)."""

import numpy as np
import pytest

from conftest import smooth
from napari_dgno import deblur
from napari_dgno.normalize import fit_normalization


def psnr(x, reference):
    data_range = float(reference.max() - reference.min())
    return 10 * np.log10(data_range**2 / np.mean((x.astype(np.float64) - reference) ** 2))


def test_a_stack_fit_samples_every_plane():
    """A step on every axis skipped whole planes: the 10x brighter plane's range was never seen."""
    rng = np.random.default_rng(0)
    stack = rng.random((2, 2048, 2048), dtype=np.float32) * 100
    stack[1] *= 10
    norm = fit_normalization(stack)
    assert norm.hi == pytest.approx(np.percentile(stack, 99.8), rel=0.01)  # ~996, not ~99.8


def test_a_2d_fit_is_the_same_as_before():
    """Training data (data/datasets.py) fits 2-D images: their subsampling must not change."""
    image = np.random.default_rng(1).random((2100, 2100), dtype=np.float32)
    step = int(np.ceil((image.size / 4_000_000) ** 0.5))
    expected = np.percentile(image[::step, ::step], [1.0, 99.8])
    norm = fit_normalization(image)
    assert (norm.lo, norm.hi) == (float(expected[0]), float(expected[1]))


@pytest.mark.parametrize("lazy", [False, True])
def test_each_plane_of_a_stack_gets_the_result_it_gets_alone(tiny, lazy):
    """Planes 10x apart in brightness (and a 4x dimmer one): each restored as if alone, within
    0.1 dB of its own result and equal to float rounding."""
    sharp = smooth((96, 128), sigma=3, seed=5)
    planes = [sharp + 20, (sharp + 20) * 10, (sharp + 20) / 4]
    stack = np.stack(planes)
    if lazy:
        import dask.array as da

        stack = da.from_array(stack, chunks=(1, 48, 128))
    together = deblur(stack, tiny)
    for plane, out in zip(planes, together, strict=True):
        alone = deblur(plane, tiny)
        np.testing.assert_allclose(out, alone, rtol=1e-4, atol=1e-4 * float(plane.max()))
        assert abs(psnr(out, plane) - psnr(alone, plane)) < 0.1


def test_stack_normalisation_is_one_fit_and_is_recorded(tiny):
    sharp = smooth((64, 64), sigma=3, seed=6) + 20
    stack = np.stack([sharp, sharp * 10])
    info_plane, info_stack = {}, {}
    by_plane = deblur(stack, tiny, info=info_plane)
    by_stack = deblur(stack, tiny, normalize="stack", info=info_stack)
    assert info_plane["normalization"]["mode"] == "plane" and len(info_plane["normalization"]["planes"]) == 2
    assert info_stack["normalization"]["mode"] == "stack" and "planes" not in info_stack["normalization"]
    assert not np.allclose(by_plane[0], by_stack[0], rtol=1e-3)  # the dim plane differs under one fit
