"""Overlay computations (no Qt): element geometry, learned kernels, moments, PSF fit wiring."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_dgno import overlays as ov
from napari_dgno.errors import Cancelled, InputError
from napari_dgno.physics.psf import Optics, defocus_psf


class LinearConvNet(torch.nn.Module):
    """A shift-invariant linear "network": its local kernel is exactly its convolution weight."""

    def __init__(self, weight: np.ndarray):
        super().__init__()
        k = weight.shape[-1]
        self.conv = torch.nn.Conv2d(1, 1, k, padding=k // 2, bias=False, padding_mode="zeros")
        with torch.no_grad():
            self.conv.weight.copy_(torch.as_tensor(weight)[None, None])

    def forward(self, x, element_size=None, flux=None):
        return self.conv(x)


# -- geometry --------------------------------------------------------------------------------------


def _world_extent(scale, translate, start_px, stop_px):
    """World interval covered by data pixels start_px..stop_px-1 (pixel centres at integers)."""
    return translate + scale * (start_px - 0.5), translate + scale * (stop_px - 0.5)


@pytest.mark.parametrize("kernel_size", [5, 9, 17])
def test_mosaic_tiles_cover_exactly_their_elements(kernel_size):
    # A 2x2-element image with a known layer scale/translate.
    e, scale, translate = 16, np.array([0.5, 2.0]), np.array([10.0, -3.0])
    m_scale, m_translate = ov.mosaic_transform(scale, translate, e, kernel_size)
    m_scale, m_translate = np.array(m_scale), np.array(m_translate)
    for i in range(2):
        for j in range(2):
            idx = np.array([i, j])
            want = _world_extent(scale, translate, idx * e, (idx + 1) * e)
            got = _world_extent(m_scale, m_translate, idx * kernel_size, (idx + 1) * kernel_size)
            np.testing.assert_allclose(got, want, atol=1e-12)


def test_mosaic_geometry_matches_napari_transforms():
    napari_layers = pytest.importorskip("napari.layers")
    e, k = 8, 5
    image = napari_layers.Image(np.zeros((2 * e, 2 * e)), scale=(0.3, 0.7), translate=(4.0, -1.0))
    m_scale, m_translate = ov.mosaic_transform(image.scale, image.translate, e, k)
    tiles = napari_layers.Image(np.zeros((2 * k, 2 * k)), scale=m_scale, translate=m_translate)
    for i in range(2):
        for j in range(2):
            # corners of mosaic block (i, j) and of element (i, j), in data coordinates (edges at ±0.5)
            block = np.array([[i * k - 0.5, j * k - 0.5], [(i + 1) * k - 0.5, (j + 1) * k - 0.5]])
            element = np.array([[i * e - 0.5, j * e - 0.5], [(i + 1) * e - 0.5, (j + 1) * e - 0.5]])
            got = np.array([tiles.data_to_world(c) for c in block])
            want = np.array([image.data_to_world(c) for c in element])
            np.testing.assert_allclose(got, want, atol=1e-9)


def test_element_map_transform_is_a_one_pixel_mosaic():
    scale, translate = (0.5, 0.5), (1.0, 2.0)
    s, t = ov.element_map_transform(scale, translate, 16)
    assert s == (8.0, 8.0)
    # the value of element (0, 0) sits at the centre of pixels 0..15 -> 7.5 px
    np.testing.assert_allclose(t, (1.0 + 0.5 * 7.5, 2.0 + 0.5 * 7.5))


def test_element_grid_partial_elements_and_rectangles():
    grid = ov.ElementGrid((40, 33), 16)
    assert (grid.rows, grid.cols) == (3, 3)
    centres = grid.centres()
    assert centres.shape == (3, 3, 2)
    np.testing.assert_array_equal(centres[:, 0, 0], [8, 24, 36])  # last row of elements: 32..39
    np.testing.assert_array_equal(centres[0, :, 1], [8, 24, 32])  # last column: just pixel 32
    rects = ov.element_rectangles(grid)
    assert len(rects) == 9
    np.testing.assert_allclose(rects[0].min(0), [-0.5, -0.5])
    np.testing.assert_allclose(rects[0].max(0), [15.5, 15.5])
    np.testing.assert_allclose(rects[-1].max(0), [39.5, 32.5])  # clipped to the image
    with pytest.raises(InputError):
        ov.ElementGrid((8, 8), 0)


def test_mosaic_places_tile_ij_at_block_ij():
    tiles = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4)
    m = ov.mosaic(tiles)
    assert m.shape == (8, 12)
    np.testing.assert_array_equal(m[4:8, 8:12], tiles[1, 2])


# -- kernels ----------------------------------------------------------------------------------------


def test_learned_kernel_of_a_linear_filter_is_its_weight():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(5, 5)).astype(np.float32)
    net = LinearConvNet(weight)
    image = rng.random((48, 40)).astype(np.float32)
    kernels = ov.learned_kernels(net, image, 8, kernel_size=9)
    assert kernels.shape == (6, 5, 9, 9)
    expected = np.pad(weight, 2)  # Jacobian row of a cross-correlation is the weight itself
    # interior elements (border ones see the zero padding) match exactly, despite grouped passes
    for i in range(1, 5):
        for j in range(1, 4):
            np.testing.assert_allclose(kernels[i, j], expected, atol=1e-5)


def test_grouped_passes_match_one_pass_per_element(tiny):
    image = np.random.default_rng(1).random((64, 48)).astype(np.float32) * 500
    grouped = ov.learned_kernels(tiny, image, 16)
    single = ov.learned_kernels(tiny, image, 16, stride=100)  # one element per backward pass
    assert grouped.shape == (4, 3, 17, 17)
    assert np.abs(single).max() > 0
    np.testing.assert_allclose(grouped, single, atol=1e-3 * np.abs(single).max())


def test_kernels_in_tiles_match_whole_image(tiny):
    image = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    whole = ov.learned_kernels(tiny, image, 8)
    tiled = ov.learned_kernels(tiny, image, 8, tile=32)
    # the scan encoder sees less context inside a tile: close, not identical
    assert np.abs(whole - tiled).max() < 0.05 * np.abs(whole).max()


def test_learned_kernels_progress_cancel_and_bad_input(tiny):
    image = np.random.default_rng(3).random((32, 32)).astype(np.float32)
    calls = []
    ov.learned_kernels(tiny, image, 8, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1]
    with pytest.raises(Cancelled):
        ov.learned_kernels(tiny, image, 8, cancel=lambda: True)
    with pytest.raises(InputError):
        ov.learned_kernels(tiny, image[None], 8)
    with pytest.raises(InputError):
        ov.learned_kernels(tiny, image, 8, kernel_size=4)


# -- descriptors ------------------------------------------------------------------------------------


def test_kernel_moments_width_and_anisotropy():
    k = 21
    u = np.arange(k) - k // 2
    yy, xx = np.meshgrid(u, u, indexing="ij")
    round_ = np.exp(-(yy**2 + xx**2) / (2 * 2.0**2))
    long_ = np.exp(-(yy**2) / (2 * 1.0**2) - xx**2 / (2 * 3.0**2))
    delta = np.zeros((k, k))
    delta[k // 2, k // 2] = 1
    width, aniso = ov.kernel_moments(np.stack([round_, long_, delta, 0 * delta])[None])
    np.testing.assert_allclose(width[0, 0], np.sqrt(2 * 4.0), rtol=0.02)
    np.testing.assert_allclose(aniso[0, 0], 1.0, rtol=0.02)
    np.testing.assert_allclose(aniso[0, 1], 9.0, rtol=0.05)
    assert width[0, 2] == 0 and aniso[0, 2] == 1  # a delta: no reach, round
    assert width[0, 3] == 0 and aniso[0, 3] == 1  # an empty tile does not divide by zero


def test_normalize_for_display_keeps_sign_and_peaks_at_one():
    tiles = np.stack([np.array([[1.0, -4.0], [2.0, 0.0]]), np.zeros((2, 2))])[None]
    out = ov.normalize_for_display(tiles)
    np.testing.assert_allclose(out[0, 0], [[0.25, -1.0], [0.5, 0.0]])
    assert not out[0, 1].any()


# -- everything together ----------------------------------------------------------------------------


def test_compute_overlays_recovers_a_uniform_defocus(tiny):
    """With the true sharp image as "restored", the fitted defocus is the one used to blur."""
    rng = np.random.default_rng(4)
    sharp = ndimage.gaussian_filter(rng.random((64, 64)), 1.0) * 1000 + 100
    z = 6.0
    blurred = ndimage.convolve(sharp, defocus_psf(z, Optics(), 31), mode="reflect")
    z_grid = np.arange(0.0, 12.5, 0.5)  # a short PSF family keeps the test fast
    result = ov.compute_overlays(tiny, blurred.astype(np.float32), 16, restored=sharp, z_grid=z_grid)
    assert result.defocus_um.shape == (4, 4)
    assert np.median(result.defocus_um) == pytest.approx(z, abs=1.0)
    assert result.kernels.shape == result.psfs.shape == (4, 4, 17, 17)
    np.testing.assert_allclose(result.psfs.sum(axis=(-2, -1)), 1.0, atol=0.05)
    features = result.features()
    assert set(features) >= {"defocus_um", "kernel_width_px", "kernel_anisotropy"}
    assert all(len(v) == 16 for v in features.values())


def test_compute_overlays_restores_with_the_engine_and_reports_progress(tiny):
    image = np.random.default_rng(5).random((48, 48)).astype(np.float32) * 100
    seen = []
    result = ov.compute_overlays(
        tiny, image, 8, "p0dg", z_grid=np.arange(0.0, 8.5, 1.0), progress=lambda d, t: seen.append((d, t))
    )
    assert result.grid_shape == (6, 6)
    assert result.settings["flux"] == "p0dg"
    assert seen[-1] == (1000, 1000) and all(t == 1000 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(Cancelled):
        ov.compute_overlays(tiny, image, 8, cancel=lambda: True)
    with pytest.raises(InputError):
        ov.compute_overlays(tiny, image, 0)


# -- one forward pass, kernels in few backward passes ----------------------------------------------


class Counting(torch.nn.Module):
    """Wraps a network and counts its forward passes (the expensive part of an overlay)."""

    def __init__(self, net):
        super().__init__()
        self.inner, self.forwards = net, 0  # not ``.net``: that would be unwrapped as a DeblurModel
        self.config = net.config

    def pad_multiple(self, element_size=None):
        return self.inner.pad_multiple(element_size)

    def forward(self, x, element_size=None, flux=None):
        self.forwards += 1
        return self.inner(x, element_size, flux)


def test_one_forward_pass_serves_the_kernels_and_the_psf_fit(tiny):
    counting = Counting(tiny)
    image = np.random.default_rng(0).random((64, 80)).astype(np.float32) * 1000
    result = ov.compute_overlays(counting, image, 16, z_grid=np.arange(0, 8.1, 0.5))
    assert counting.forwards == 1  # was one deblur pass plus one pass per kernel tile
    assert result.settings["stride"] == 2  # 4 backward passes at E = 16 (9 before)
    # the restored image it fitted PSFs to is the network's output, as Deblur gives it
    from napari_dgno.inference.engine import deblur

    restored = deblur(image, tiny, element_size=16)
    _, output = ov._kernels_and_output(tiny, image, 16, None, None, None, None, None, None)
    np.testing.assert_allclose(output, restored, rtol=1e-4, atol=1e-2)
    assert result.confidence.shape == result.defocus_um.shape
    assert ((result.confidence >= 0) & (result.confidence <= 1)).all()


def test_the_defocus_map_is_smooth_on_a_flat_specimen_and_flags_empty_elements():
    from napari_dgno.physics.blur import eigen_psf_basis, scatter_blur
    from napari_dgno.physics.fit import fit_defocus_map

    rng = np.random.default_rng(1)
    sharp = np.zeros((160, 160))
    for y, x in rng.integers(6, 154, size=(60, 2)):
        if x < 112:  # the right 48 px are empty: background only
            sharp[y - 2 : y + 3, x - 2 : x + 3] += rng.uniform(0.5, 1.0)
    optics = Optics()
    depth = np.full(sharp.shape, 6.0)  # a flat specimen, 6 µm out of focus everywhere
    blurred = 800 * scatter_blur(sharp, depth, eigen_psf_basis(optics, 12.0), dtype=np.float64) + 100
    blurred = blurred + rng.normal(0, 8, blurred.shape)
    grid = np.arange(0, 12.1, 0.5)
    raw = fit_defocus_map(blurred, sharp, 16, optics, grid, kernel_size=15, smooth=0)
    smooth = fit_defocus_map(blurred, sharp, 16, optics, grid, kernel_size=15, smooth=1.0)
    empty = raw.confidence[:, -2:]
    assert empty.max() < 0.1 < np.median(raw.confidence[:, :6])  # no signal: low confidence
    neighbours = lambda z: np.median(np.abs(np.diff(z, axis=1)))  # noqa: E731
    assert np.all(np.abs(smooth.z_um - 6.0) <= 0.5)  # every element, the empty ones included
    assert neighbours(smooth.z_um) <= neighbours(raw.z_um)
    assert np.ptp(raw.z_um) > np.ptp(smooth.z_um)  # the unregularised map is noisy where empty
