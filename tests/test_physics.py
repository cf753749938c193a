"""Physics: PSFs, eigen-PSF scatter blur, depth maps, camera noise, simulation and PSF fitting."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from scipy.signal import fftconvolve

from napari_dgno.errors import InputError
from napari_dgno.physics import (
    CameraConfig,
    DepthConfig,
    EigenPSFBasis,
    Optics,
    SimulationConfig,
    camera_noise,
    defocus_psf,
    eigen_psf_basis,
    energy_radius,
    fit_defocus,
    fit_defocus_map,
    noiseless_camera,
    random_depth_map,
    scatter_blur,
    scatter_blur_direct,
    simulate_batch,
    simulate_pair,
)

torch.set_num_threads(1)

SMALL = SimulationConfig(depth=DepthConfig(max_defocus_um=8.0))  # small PSFs keep tests fast


def nuclei_like(shape=(64, 64), seed=0):
    """Blobs with texture: enough structure at every scale for blur and fit tests."""
    rng = np.random.default_rng(seed)
    blobs = ndi.gaussian_filter(rng.random(shape), 3, mode="wrap")
    mask = blobs > np.percentile(blobs, 65)
    texture = ndi.gaussian_filter(rng.random(shape), 1)
    return (mask * (0.6 + texture)).astype(np.float32)


# -- PSF -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [0.0, 3.0, 20.0])
def test_psf_is_normalised_odd_and_centred(z):
    psf = defocus_psf(z)
    assert psf.dtype == np.float64
    assert psf.shape[0] == psf.shape[1] and psf.shape[0] % 2 == 1
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert psf.min() >= 0
    yy, xx = np.indices(psf.shape)
    c = psf.shape[0] // 2
    assert (psf * yy).sum() == pytest.approx(c, abs=1e-6)  # centroid on the central pixel
    assert (psf * xx).sum() == pytest.approx(c, abs=1e-6)


@pytest.mark.parametrize("z, radius", [(0.0, 1.0), (4.0, 3.0), (16.0, 10.0), (32.0, 21.0)])
def test_80_percent_energy_radius_matches_design_table(z, radius):
    # docs/design.md: at NA 0.45 the 80 %-energy radius is about 1, 3, 10, 21 px.
    assert energy_radius(defocus_psf(z, Optics(na=0.45))) == pytest.approx(radius, rel=0.3)


def test_psf_symmetries_and_growth():
    p = defocus_psf(6.0, size=31)
    np.testing.assert_allclose(defocus_psf(-6.0, size=31), p)
    np.testing.assert_allclose(p, p[::-1, ::-1], atol=1e-12)
    np.testing.assert_allclose(p, p.T, atol=1e-12)
    radii = [energy_radius(defocus_psf(z)) for z in (0, 4, 8, 16)]
    assert radii == sorted(radii)


def test_psf_size_argument_and_bad_size():
    assert defocus_psf(2.0, size=7).shape == (7, 7)
    assert defocus_psf(2.0, size=7).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        defocus_psf(2.0, size=8)


# -- eigen-PSF scatter blur ---------------------------------------------------------------------------


def test_eigen_basis_reproduces_family_between_samples():
    basis = eigen_psf_basis(Optics(), 8.0)
    assert basis.n_components <= 12
    for z in (0.0, 1.37, 5.05, 7.9):
        exact = defocus_psf(z, size=basis.size)
        assert np.linalg.norm(basis.psf(z) - exact) / np.linalg.norm(exact) < 1e-3


def test_fixed_component_count():
    basis = EigenPSFBasis.build(Optics(), z_max=4.0, dz=0.5, n_components=3)
    assert basis.n_components == 3 and basis.eigen_psfs.shape == (3, basis.size, basis.size)


def test_low_rank_scatter_matches_direct_reference():
    basis = eigen_psf_basis(Optics(), 8.0)
    sharp = nuclei_like((20, 20))
    rng = np.random.default_rng(3)
    depth = np.round(random_depth_map((20, 20), rng, DepthConfig(max_defocus_um=8.0)), 1)
    direct = scatter_blur_direct(sharp, depth, size=basis.size)
    fast = scatter_blur(sharp, depth, basis, dtype=np.float64)
    assert np.linalg.norm(fast - direct) / np.linalg.norm(direct) < 1e-2


def test_scatter_keeps_flat_image_flat_to_the_border():
    basis = eigen_psf_basis(Optics(), 8.0)
    out = scatter_blur(np.ones((40, 50)), np.full((40, 50), 7.5), basis)
    assert out.shape == (40, 50) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-3)  # reflect padding: no dark borders


def test_scatter_conserves_light_but_not_flatness_at_depth_jumps():
    # Each emitter keeps its light; next to a jump the defocused side spills light onto the
    # focused side (a halo), which a per-output-pixel ("gather") blur would not show.
    basis = eigen_psf_basis(Optics(), 8.0)
    depth = np.where(np.arange(60)[None, :] < 30, 0.0, 8.0) * np.ones((40, 1))
    out = scatter_blur(np.ones((40, 60)), depth, basis, dtype=np.float64)
    assert out[20, 29] > 1.2 and out[20, 30] < 0.8
    assert out[:, 20:40].mean() == pytest.approx(1.0, abs=1e-3)


def test_scatter_torch_batch_and_valid_mode():
    basis = eigen_psf_basis(Optics(), 8.0)
    r = basis.radius
    x = np.random.default_rng(0).random((3, 40 + 2 * r, 44 + 2 * r)).astype(np.float32)
    depth = np.full(x.shape, 5.0, dtype=np.float32)
    assert scatter_blur(x, depth, basis, pad=False).shape == (3, 40, 44)
    # A uniform depth is a plain convolution with that PSF.
    psf = defocus_psf(5.0, size=basis.size)
    ref = ndi.convolve(x[0].astype(np.float64), psf)[r:-r, r:-r]
    np.testing.assert_allclose(scatter_blur(x, depth, basis, pad=False)[0], ref, atol=1e-3)


# -- depth maps ------------------------------------------------------------------------------------


def test_depth_map_is_deterministic_bounded_and_has_jumps():
    config = DepthConfig(max_defocus_um=20.0, max_regions=4)
    a = random_depth_map((96, 128), np.random.default_rng(7), config)
    b = random_depth_map((96, 128), np.random.default_rng(7), config)
    assert a.dtype == np.float32 and a.shape == (96, 128)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_depth_map((96, 128), np.random.default_rng(8), config))
    maps = [random_depth_map((96, 128), np.random.default_rng(s), config) for s in range(10)]
    assert all(m.min() >= 0 and m.max() <= 20.0 for m in maps)
    # Smooth parts change by < 0.2 µm per px; jumps between regions are much larger.
    steps = [max(np.abs(np.diff(m, axis=0)).max(), np.abs(np.diff(m, axis=1)).max()) for m in maps]
    assert sum(s > 1.0 for s in steps) >= 3


# -- camera ----------------------------------------------------------------------------------------


def test_camera_noise_statistics():
    rng = np.random.default_rng(0)
    frame = camera_noise(np.full((400, 400), 200.0), rng, read_noise_e=5.0, offset_adu=100.0)
    assert frame.dtype == np.float32
    assert np.array_equal(frame, np.round(frame))
    assert frame.mean() == pytest.approx(300.0, abs=0.5)
    assert frame.var() == pytest.approx(200.0 + 25.0 + 1 / 12, rel=0.03)


def test_camera_clips_to_bit_depth():
    rng = np.random.default_rng(0)
    frame = camera_noise(np.array([[0.0, 10.0], [1e5, 4000.0]]), rng, bits=12)
    assert frame.min() >= 0 and frame.max() == 4095
    assert noiseless_camera(np.array([1e6]), bits=12)[0] == 4095
    assert noiseless_camera(np.array([5.0]), offset_adu=100.0, gain=2.0)[0] == 110.0


# -- simulation ------------------------------------------------------------------------------------


def test_simulate_pair_shapes_units_and_determinism():
    sharp = nuclei_like((48, 56))
    out = simulate_pair(sharp, np.random.default_rng(1), SMALL)
    for key in ("blurred", "sharp", "depth"):
        assert out[key].shape == (48, 56) and out[key].dtype == np.float32
    cam = out["camera"]
    assert 100 <= cam.peak_photons <= 2000 and 3 <= cam.read_noise_e <= 10
    assert out["sharp"].min() >= cam.offset_adu  # noise-free, through the same camera
    assert out["blurred"].max() <= 4095
    again = simulate_pair(sharp, np.random.default_rng(1), SMALL)
    np.testing.assert_array_equal(out["blurred"], again["blurred"])


def high_frequency_energy(image):
    spectrum = np.abs(np.fft.fft2(image - image.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1])))
    return spectrum[(f > 0.05) & (f < 0.2)].sum()


def test_bigger_defocus_blurs_more():
    sharp = nuclei_like((64, 64))
    config = SimulationConfig(
        depth=DepthConfig(max_defocus_um=12.0),
        camera=CameraConfig(peak_photons=(2000, 2000), read_noise_e=(3, 3)),
    )
    energies = []
    for z in (0.0, 4.0, 12.0):
        out = simulate_pair(sharp, np.random.default_rng(0), config, depth=np.full((64, 64), z))
        energies.append(high_frequency_energy(out["blurred"]))
    assert energies[0] > 1.5 * energies[1] > 6 * energies[2]


def test_simulate_batch_valid_centre():
    r = SMALL.margin
    x = np.stack([nuclei_like((32 + 2 * r, 40 + 2 * r), seed=s) for s in range(2)])
    out = simulate_batch(x, np.random.default_rng(0), SMALL, pad=False)
    assert out["blurred"].shape == out["sharp"].shape == out["depth"].shape == (2, 32, 40)
    assert out["blurred"].dtype == torch.float32 and len(out["camera"]) == 2


# -- PSF fitting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("z", [4.0, 9.3, 20.0])
def test_fit_recovers_defocus(z):
    optics = Optics()
    sharp = nuclei_like((112, 112), seed=2)
    blurred = fftconvolve(np.pad(sharp, 30, mode="wrap"), defocus_psf(z, optics, 61), "valid")
    blurred = 700 * blurred + 100 + np.random.default_rng(0).normal(0, 5, blurred.shape)
    c = slice(24, -24)  # a patch whose borders saw real context, as inside a larger image
    z_fit, psf, residual = fit_defocus(blurred[c, c], sharp[c, c], optics, np.arange(0, 20.1, 0.5))
    assert abs(z_fit - z) <= 1.0
    assert psf.sum() == pytest.approx(1.0) and psf.shape[0] % 2 == 1
    assert 0 <= residual < 0.2


def test_fit_defocus_map_finds_two_regions():
    basis = eigen_psf_basis(Optics(), 20.0)
    sharp = nuclei_like((96, 128), seed=4)
    depth = np.where(np.arange(128)[None, :] < 64, 4.0, 14.0) * np.ones((96, 1))
    blurred = 500 * scatter_blur(sharp, depth, basis, dtype=np.float64) + 100
    fitted = fit_defocus_map(blurred, sharp, 32, z_grid=np.arange(0, 20.1, 0.5), kernel_size=15)
    assert fitted.z_um.shape == fitted.residual.shape == (3, 4)
    assert fitted.psfs.shape == (3, 4, 15, 15)
    assert np.all(np.abs(fitted.z_um[:, 0] - 4.0) <= 1.0)
    assert np.all(np.abs(fitted.z_um[:, -1] - 14.0) <= 1.0)


def test_fit_rejects_bad_input():
    with pytest.raises(InputError):
        fit_defocus(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(InputError):
        fit_defocus_map(np.zeros((8, 8)), np.zeros((8, 8)), element_size=4, kernel_size=4)


@pytest.mark.parametrize("mode", ["reflect", "wrap"])
@pytest.mark.parametrize("sigma", [4.0, 19.25, 49.5, 300.0])
def test_fft_gaussian_blur_is_scipys_filter(mode, sigma):
    """The simulator's wide haze and illumination blurs go through the FFT (11x faster at σ 40);
    they must stay scipy's filter, including kernels longer than the image."""
    from napari_dgno.physics.filters import gaussian_blur

    image = np.random.default_rng(0).random((37, 128))
    expected = ndi.gaussian_filter(image, sigma, mode=mode)
    np.testing.assert_allclose(gaussian_blur(image, sigma, mode), expected, rtol=0, atol=1e-12)
