"""Fine-tune data from the user's arrays: held-out validation never overlaps training (no Qt)."""

import datetime as dt

import numpy as np
import pytest
import tifffile
import torch

from napari_dgno import registry
from napari_dgno.errors import InputError
from napari_dgno.train import user_data as ls


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def numbered(shape, start=0):
    """Every pixel a different value, so a pixel's value says where it came from."""
    return (np.arange(np.prod(shape), dtype=np.float32) + start).reshape(shape)


def values(planes):
    return set(np.concatenate([np.asarray(p).ravel() for p in planes]).tolist())


def test_plan_holdout_is_deterministic_spread_and_checks_sizes():
    planes = ls.plan_holdout([(64, 64)] * 10, 32, 0.2)
    assert planes == ls.plan_holdout([(64, 64)] * 10, 32, 0.2)
    assert (planes.kind, planes.planes) == ("planes", (2, 7))  # spread over the stack, not its end
    assert ls.plan_holdout([(64, 64)] * 2, 32, 0.05).planes == (1,)  # always one of each
    strip = ls.plan_holdout([(100, 64)], 32, 0.25)
    assert (strip.kind, strip.rows) == ("strip", 25)
    assert ls.plan_holdout([(64, 64)], 32, 0.05).rows == ls.MIN_VALIDATION_ROWS
    assert ls.plan_holdout([(64, 64)] * 3, 32, 0.2, strip=True).kind == "strip"
    with pytest.raises(InputError, match="rows are left for 64-px training patches"):
        ls.plan_holdout([(64, 64)], 64, 0.2)
    with pytest.raises(InputError, match="smaller than the 64-px training patch"):
        ls.plan_holdout([(32, 32), (64, 64), (64, 64)], 64, 0.2)
    assert ls.plan_holdout([(64, 64), (32, 32), (64, 64)], 64, 0.2).planes == (1,)  # held out: fine
    with pytest.raises(InputError, match="between 0 and 1"):
        ls.plan_holdout([(64, 64)], 32, 0.0)


def test_pair_source_single_image_holds_out_a_bottom_strip():
    sharp = numbered((80, 64))
    blurred = sharp + 10_000
    source = ls.pair_source(blurred, sharp, patch=32, seed=1, val_fraction=0.25, names=("b", "s"))
    rows = source.describe()["validation"]
    assert rows == {"method": "strip", "fraction": 0.25, "rows": "last 20 rows"}
    train, val = source.train, source.validation
    assert [p.shape for p in train.blurred] == [(60, 64)] and [p.shape for p in val.blurred] == [(20, 64)]
    # disjoint and complete: every pixel is either trained on or validated on, never both
    assert not values(train.sharp) & values(val.sharp) and not values(train.blurred) & values(val.blurred)
    assert values(train.sharp) | values(val.sharp) == values([sharp])
    np.testing.assert_array_equal(val.sharp[0], sharp[60:])
    b, s = source.make_batch(3, np.random.default_rng(0))
    assert b.shape == s.shape == (3, 1, 32, 32)
    pairs = source.validation_pairs(4, 128, seed=5)  # crops fit in the 20-row strip
    assert len(pairs) == 4 and pairs[0][0].shape == (20, 20)
    again = ls.pair_source(blurred, sharp, patch=32, seed=1, val_fraction=0.25).validation_pairs(4, 128, 5)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(pairs, again, strict=True))


def test_pair_source_stacks_hold_out_whole_planes():
    sharp = numbered((5, 48, 48))
    source = ls.pair_source(sharp * 2 + 1, sharp, patch=32, val_fraction=0.2)
    assert source.describe()["validation"]["planes"] == [2]
    assert len(source.train.sharp) == 4 and len(source.validation.sharp) == 1
    np.testing.assert_array_equal(source.validation.sharp[0], sharp[2])
    assert not values(source.train.sharp) & values(source.validation.sharp)
    assert not values(source.train.blurred) & values(source.validation.blurred)


def test_pair_source_refuses_other_shapes_and_small_images():
    with pytest.raises(InputError, match=r"'b' \(64, 64\) and 's' \(64, 48\) differ in shape"):
        ls.pair_source(np.zeros((64, 64)), np.zeros((64, 48)), patch=32, names=("b", "s"))
    with pytest.raises(InputError, match="choose a smaller patch size"):
        ls.pair_source(np.zeros((40, 40)), np.zeros((40, 40)), patch=32)


def test_zstack_source_detects_focus_and_holds_out_a_strip_of_every_plane():
    rng = np.random.default_rng(0)
    sharp = rng.random((64, 64)).astype(np.float32)
    from scipy import ndimage as ndi

    stack = np.stack([ndi.gaussian_filter(sharp, abs(z - 3) * 1.5) for z in range(5)])
    source = ls.zstack_source(stack, patch=32, val_fraction=0.25, name="z")
    info = source.describe()
    assert info["focus_index"] == 3 and info["focus"].startswith("detected")
    assert info["validation"]["method"] == "strip"
    train, val = source.train, source.validation
    assert len(train.blurred) == 4 and all(p.shape == (48, 64) for p in train.blurred)
    assert all(p.shape == (16, 64) for p in val.blurred)
    # the in-focus plane is the target of every pair, yet its validation rows are never trained on
    for z, t_blurred, t_sharp, v_blurred, v_sharp in zip(
        (0, 1, 2, 4), train.blurred, train.sharp, val.blurred, val.sharp, strict=True
    ):
        np.testing.assert_array_equal(t_blurred, stack[z, :48])
        np.testing.assert_array_equal(t_sharp, stack[3, :48])
        np.testing.assert_array_equal(v_blurred, stack[z, 48:])
        np.testing.assert_array_equal(v_sharp, stack[3, 48:])
    chosen = ls.zstack_source(stack, 1, patch=32, val_fraction=0.25)
    assert chosen.describe()["focus_index"] == 1 and chosen.describe()["focus"] == "chosen"
    with pytest.raises(InputError, match="outside 'stack'"):
        ls.zstack_source(stack, 7, patch=32)
    with pytest.raises(InputError, match=r"must be \(Z, Y, X\)"):
        ls.zstack_source(stack[0], patch=32)


def test_folder_source_holds_out_whole_files(tmp_path):
    blurred_dir, sharp_dir = tmp_path / "blurred", tmp_path / "sharp"
    blurred_dir.mkdir()
    sharp_dir.mkdir()
    for i in range(3):
        image = numbered((48, 48), start=i * 10_000).astype(np.uint16)
        tifffile.imwrite(sharp_dir / f"f{i}.tif", image)
        tifffile.imwrite(blurred_dir / f"f{i}.tif", image + 5)
    tifffile.imwrite(sharp_dir / "unpaired.tif", np.zeros((48, 48), np.uint16))
    assert ls.folder_pair_names(blurred_dir, sharp_dir) == ["f0", "f1", "f2"]
    source = ls.folder_source(blurred_dir, sharp_dir, patch=32, val_fraction=0.2)
    info = source.describe()
    assert info["files"] == ["f0", "f1", "f2"] and info["validation"]["planes"] == [1]
    np.testing.assert_array_equal(source.validation.sharp[0], numbered((48, 48), 10_000))
    assert not values(source.train.sharp) & values(source.validation.sharp)
    assert source.make_batch(2, np.random.default_rng(0))[0].shape == (2, 1, 32, 32)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no TIFF files with the same name"):
        ls.folder_pair_names(empty, sharp_dir)
    with pytest.raises(InputError, match="choose a folder"):
        ls.folder_pair_names("", sharp_dir)
    with pytest.raises(InputError, match="is not a folder"):
        ls.folder_source(tmp_path / "missing", sharp_dir, patch=32)


def test_simulated_source_splits_planes_or_a_strip_and_simulates_both():
    one = ls.simulated_source(
        [numbered((64, 64))], patch=32, val_fraction=0.25, max_defocus_um=6, names=["c"]
    )
    assert one.describe()["validation"]["method"] == "strip" and one.describe()["max_defocus_um"] == 6
    assert one.train.images[0].shape == (48, 64) and one.validation.images[0].shape == (16, 64)
    b, s = one.make_batch(2, np.random.default_rng(0))
    assert b.shape == s.shape == (2, 1, 32, 32)
    pairs = one.validation_pairs(2, 128, seed=0)  # thinner than the simulator's margin: still fine
    assert pairs[0][0].shape == (16, 16) and np.isfinite(pairs[0][0]).all()

    several = ls.simulated_source(
        [numbered((2, 48, 48)), numbered((48, 48), 1e5)], patch=32, val_fraction=0.3, max_defocus_um=6
    )
    assert several.describe()["validation"]["planes"] == [1]
    assert len(several.train.images) == 2 and len(several.validation.images) == 1


def test_run_names_configs_and_saving(tmp_path, monkeypatch):
    from napari_dgno.inference.engine import list_models, load_model
    from napari_dgno.io.checkpoint import save_checkpoint
    from napari_dgno.model import build_model, preset_config

    monkeypatch.setenv("NAPARI_DGNO_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.delenv(ls.RUNS_DIR_ENV, raising=False)
    assert ls.runs_dir() == tmp_path / "runs"
    monkeypatch.setenv(ls.RUNS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert ls.runs_dir() == tmp_path / "elsewhere"

    when = dt.datetime(2025, 3, 4, 5, 6)
    assert ls.default_run_name("dgno small/face", when) == "finetune-dgno-small-face-20250304-0506"
    assert ls.default_run_name(None, when) == "finetune-fresh-20250304-0506"
    (tmp_path / "r").mkdir()
    (tmp_path / "r-2").mkdir()
    assert ls.unique_run_name("r", tmp_path) == "r-3" and ls.unique_run_name("q", tmp_path) == "q"
    for bad in ("", "a b", "../x", "-x"):
        with pytest.raises(InputError, match="cannot be a model name"):
            registry.check_model_name(bad)

    cfg = ls.finetune_config("run1", base_checkpoint=None, steps=40, patch=32, batch_size=2, lr=1e-4)
    assert (cfg.val_every, cfg.checkpoint_every, cfg.warmup_steps) == (4, 4, 2)
    assert cfg.output_dir == str(tmp_path / "elsewhere") and cfg.preset == ls.FRESH_PRESET

    stem = tmp_path / "runs" / "run1" / "run1"
    save_checkpoint(
        stem, build_model("dgno", preset_config("tiny")), {"name": "run1", "training": {"steps": 3}}
    )
    assert ls.exported_steps(stem) == 3 and ls.exported_steps(tmp_path / "none") is None
    path = registry.save_user_model(stem, "my-model")
    assert path == tmp_path / "models" / "my-model.json"
    assert [e["name"] for e in list_models() if e["source"] == "user"] == ["my-model"]
    assert load_model("my-model").meta["run"] == str(stem.parent)
    with pytest.raises(InputError, match="already exists"):
        registry.save_user_model(stem, "my-model")
    registry.save_user_model(stem, "my-model", overwrite=True)


# -- units and one data path for the dock and `dgno train` -------------------------------------------


def _field(seed=0, shape=(96, 96)):
    """A sharp field in camera units (uint16-like, offset 100) and its blurred frame."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    sharp = gaussian_filter(rng.random(shape), 1.5)
    sharp = 100 + 3000 * (sharp - sharp.min()) / np.ptp(sharp)
    blurred = gaussian_filter(sharp, 3) + rng.normal(0, 5, shape)
    return np.clip(blurred, 0, 65535).astype(np.uint16), sharp.astype(np.float32)


def test_a_reference_in_other_units_trains_on_the_blurred_images_units():
    blurred, sharp = _field()
    in_camera_units = ls.pair_source(blurred, sharp, patch=32, seed=0)
    reference = (sharp - 100) / 3000  # float in [0, 1], as references are often stored
    in_other_units = ls.pair_source(blurred, reference, patch=32, seed=0)
    assert in_camera_units.describe()["units"].startswith("sharp and blurred in the same units")
    assert "mapped to their blurred image's units" in in_other_units.describe()["units"]
    # the targets the network learns are the same either way: the sharp image in the blurred one's
    # units, which is what inference maps the network's output back to
    a = in_camera_units.validation_pairs(4, 32, seed=1)
    b = in_other_units.validation_pairs(4, 32, seed=1)
    for (ba, sa), (bb, sb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_allclose(sb, sa, atol=0.01)


def test_a_sharp_image_of_another_field_is_refused_in_one_line():
    blurred, _ = _field(0)
    _, other = _field(1)
    with pytest.raises(InputError, match="does not match the blurred one") as info:
        ls.pair_source(blurred, other, patch=32, names=("b", "s"))
    assert "\n" not in str(info.value)


def test_dgno_train_folders_hold_out_whole_images_as_the_dock_does(tmp_path):
    from napari_dgno.train.batches import build_source

    for i in range(5):
        blurred, sharp = _field(i, (64, 64))
        for kind, image in (("blurred", blurred), ("sharp", (sharp - 100) / 3000)):
            (tmp_path / kind).mkdir(exist_ok=True)
            tifffile.imwrite(tmp_path / kind / f"f{i}.tif", image)
    data = {
        "source": "folder",
        "blurred_dir": str(tmp_path / "blurred"),
        "sharp_dir": str(tmp_path / "sharp"),
    }
    cli = build_source(data, 32, 0)
    dock = ls.folder_source(tmp_path / "blurred", tmp_path / "sharp", patch=32, seed=0)
    assert (
        cli.describe()["validation"]
        == dock.describe()["validation"]
        == {
            "method": "planes",
            "fraction": 0.2,
            "planes": [2],
        }
    )
    assert len(cli.train.blurred) == 4 and len(cli.validation.blurred) == 1
    held = cli.validation.blurred[0]
    assert not any(np.array_equal(held, b) for b in cli.train.blurred)  # never trained on
    for (b1, s1), (b2, s2) in zip(
        cli.validation_pairs(3, 32, 5), dock.validation_pairs(3, 32, 5), strict=True
    ):
        np.testing.assert_array_equal(b1, b2)
        np.testing.assert_array_equal(s1, s2)
