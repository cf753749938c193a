"""`dgno bench`: frozen test set, classical tuning per microscope, jump-distance bins, statistics,
the quick run end to end (with a real-image section), the command line.

The benchmark measures and reports; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_dgno.bench import jumps, testset
from napari_dgno.bench import models as bench_models
from napari_dgno.bench import rows as bench_rows
from napari_dgno.bench import run as bench_run
from napari_dgno.bench.classical import _psnr, global_psf
from napari_dgno.bench.testset import BenchItem, benchmark_set, tuning_set
from napari_dgno.io.checkpoint import save_checkpoint
from napari_dgno.metrics import grid_ratio, psnr_ssim
from napari_dgno.model import build_model, preset_config
from napari_dgno.physics import SimulationConfig
from napari_dgno.physics.microscope import geometric_depth_um
from napari_dgno.physics.psf import Optics, defocus_psf, energy_radius, geometric_radius_px

REPO = Path(__file__).resolve().parents[1]


def _tiny_checkpoint(stem: Path) -> Path:
    torch.manual_seed(0)
    net = build_model("dgno", preset_config("tiny"))
    return save_checkpoint(stem, net, {"name": stem.name})


# -- the test set -----------------------------------------------------------------------------------


def test_benchmark_set_is_deterministic():
    a, b = benchmark_set(quick=True), benchmark_set(quick=True)
    assert [i.name for i in a.items] == [i.name for i in b.items]
    assert len(a.items) == 2
    for x, y in zip(a.items, b.items, strict=True):
        for key in ("blurred", "sharp", "depth"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key))
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert {i.source for i in a.items} == {"cells3d", "procedural"}
    for item in a.items:
        assert item.blurred.shape == item.sharp.shape == item.depth.shape
        assert 0 <= item.depth.min() and item.depth.max() <= item.config.max_defocus_um


def test_tuning_set_is_not_the_test_set():
    test, tune = benchmark_set(quick=True), tuning_set(quick=True)
    assert test.fingerprint != tune.fingerprint
    for a in test.items:
        for b in tune.items:
            assert a.sharp.shape != b.sharp.shape or not np.array_equal(a.sharp, b.sharp)


def test_every_bench_image_has_a_range_for_psnr_to_score():
    """An over-exposed 8-bit camera once gave a validation truth of one value (PSNR's peak zero);
    such a draw is redrawn from the item's own generator, and the test set is unchanged by it."""
    for bench in (benchmark_set(), tuning_set()):
        for item in bench.items:
            assert testset._usable(item), item.name
            assert item.sharp.max() - item.sharp.min() >= 10, item.name  # well clear of the limit
    flat = BenchItem("flat", np.full((8, 8), 255.0), np.full((8, 8), 255.0), np.zeros((8, 8)))
    assert not testset._usable(flat)
    draws = iter([flat, flat, benchmark_set(quick=True).items[0]])
    assert testset._first_usable(lambda: next(draws)).name == "procedural-00"


# -- classical methods: one blur level in pixels, each image's own optics -------------------------


def test_one_global_blur_radius_means_the_same_blur_on_every_microscope():
    """R = 6 px on a 10x/0.3 and a 20x/0.45 objective: defocus 1.6x apart in µm, about the same blur
    in pixels, each from the image's own optics. (At high NA the geometric radius overstates the
    blur: at NA 1.4 oil the 80 %-energy radius is about 0.6 R.)"""
    low = Optics(na=0.3, wavelength_um=0.6, pixel_um=0.65)
    high = Optics(na=0.45, pixel_um=0.645)
    radii, depths = [], []
    for optics in (low, high):
        zeros = np.zeros((8, 8), np.float32)
        item = BenchItem("x", zeros, zeros, zeros, config=SimulationConfig(optics=optics))
        psf = global_psf(item, 6.0)
        z = geometric_depth_um(6.0, optics)
        assert geometric_radius_px(z, optics) == pytest.approx(6.0)
        np.testing.assert_array_equal(psf, defocus_psf(z, optics))
        radii.append(energy_radius(psf))
        depths.append(z)
    assert depths[0] > 1.5 * depths[1]
    assert radii[0] == pytest.approx(radii[1], rel=0.1)


# -- distance to depth jumps -----------------------------------------------------------------------


def test_jump_distance_bins_on_a_hand_made_blur_map():
    """Two halves (2 and 10 px of blur) with a smooth tilt down the rows: only the jump counts."""
    blur = np.full((32, 64), 2.0)
    blur[:, 32:] = 10.0
    blur += 0.05 * np.arange(32)[:, None]  # 0.05 px/px tilt: not a jump
    mask = jumps.jump_mask(blur)
    assert mask[:, 31].all() and mask[:, 32].all() and mask.sum() == 2 * 32
    distance = jumps.jump_distance(blur)
    np.testing.assert_array_equal(distance[0, :32], 31 - np.arange(32))
    np.testing.assert_array_equal(distance[0, 32:], np.arange(32))
    counts = np.bincount(jumps.bin_index(distance).ravel(), minlength=5)
    # [0, 8): columns 24-39; [8, 16): 16-23 and 40-47; [16, 32): 0-15 and 48-63; nothing further.
    np.testing.assert_array_equal(counts, [16 * 32, 16 * 32, 32 * 32, 0, 0])
    assert jumps.bin_labels() == ["0–8 px", "8–16 px", "16–32 px", "32–64 px", "≥64 px"]


def test_a_jump_is_a_change_of_blur_in_pixels_not_of_depth_in_um():
    """A 0.6 µm step is 3 px of blur at 100x/1.45 oil (a jump) and 0.3 px at 20x/0.45 (none)."""
    depth = np.full((16, 16), 2.0)
    depth[:, 8:] = 2.6
    high = Optics(na=1.45, wavelength_um=0.52, pixel_um=0.065, n_medium=1.515)
    low = Optics(na=0.45, pixel_um=0.645)
    blur_high, blur_low = jumps.blur_radius_map(depth, high), jumps.blur_radius_map(depth, low)
    np.testing.assert_allclose(blur_low, depth * 0.45 / np.sqrt(1 - 0.45**2) / 0.645)
    assert jumps.jump_mask(blur_high).sum() == 2 * 16
    assert not jumps.jump_mask(blur_low).any()


def test_no_jump_means_everything_is_far():
    distance = jumps.jump_distance(np.linspace(0, 5, 40 * 40).reshape(40, 40))
    assert np.isinf(distance).all()
    assert (jumps.bin_index(distance) == 4).all()


def test_binned_psnr():
    truth = np.zeros((16, 16))
    truth[0, 0] = 10.0  # data range 10
    restored = truth.copy()
    restored[:, :8] += 1.0  # MSE 1 in bin 0 -> 20 dB; bin 1 exact
    bins = np.zeros((16, 16), dtype=int)
    bins[:, 8:] = 1
    out = jumps.binned_psnr(restored, truth, bins, 3, min_pixels=1)
    assert out[0] == pytest.approx(20.0) and out[1] == math.inf and out[2] is None


def test_tuning_psnr_is_the_metrics_psnr():
    item = tuning_set(quick=True).items[0]
    assert _psnr(item.blurred, item) == pytest.approx(psnr_ssim(item.blurred, item.sharp, "gt")[0], abs=1e-9)


# -- statistics ------------------------------------------------------------------------------------


def _row(key, psnrs, sources=("cells3d", "procedural", "procedural")):
    images = [
        {"name": f"im{i}", "source": src, "psnr": p, "ssim": p / 100, "psnr_minmax": p, "ssim_minmax": 0.5,
         "grid_ratio": None if i == 0 else 3.0 + i}
        for i, (p, src) in enumerate(zip(psnrs, sources, strict=True))
    ]  # fmt: skip
    row = bench_rows.BenchRow(key, "network", key=key, images=images)
    bench_rows.summarise(row)
    return row


def test_means_standard_errors_per_source_and_grid_summary():
    row = _row("a", [20.0, 22.0, 27.0])
    assert row.psnr == pytest.approx(23.0)
    assert row.psnr_se == pytest.approx(np.std([20, 22, 27], ddof=1) / np.sqrt(3))
    assert row.by_source["cells3d"] == {"n": 1, "psnr": 20.0, "psnr_se": None, "ssim": 0.2, "ssim_se": None}
    assert row.by_source["procedural"]["psnr"] == pytest.approx(24.5)
    assert row.by_source["procedural"]["psnr_se"] == pytest.approx(2.5)
    assert (row.grid_max, row.grid_median) == (5.0, 4.5)  # the first image was too small: skipped
    assert bench_rows.mean_se([]) == (None, None) and bench_rows.mean_se([3.0]) == (3.0, None)


def test_paired_lead_of_the_reference_cancels_what_images_share():
    """The reference leads by exactly 1 dB on every image: the paired s.e. is 0, while the s.e. of
    the difference of the two means would be about 3 dB."""
    ref, other = _row("ref", [21.0, 23.0, 31.0]), _row("other", [20.0, 22.0, 30.0])
    skipped = bench_rows.BenchRow("gone", "network", key="gone")
    bench_rows.add_leads([other, ref, skipped], "ref")
    assert other.lead_psnr == pytest.approx(1.0) and other.lead_psnr_se == pytest.approx(0.0, abs=1e-12)
    assert other.lead_ssim == pytest.approx(0.01)
    assert ref.lead_psnr == 0.0 and skipped.lead_psnr is None
    assert other.by_source["procedural"]["lead_psnr"] == pytest.approx(1.0)
    assert other.by_source["cells3d"]["lead_psnr_se"] is None  # one image
    no_reference = _row("x", [1.0, 2.0, 3.0])
    bench_rows.add_leads([no_reference], "ref")
    assert no_reference.lead_psnr is None


# -- finding and training the baselines ------------------------------------------------------------


def test_missing_baselines_are_none_and_found_where_training_puts_them(tmp_path):
    models = bench_models.default_models(tmp_path)
    assert models["equal-nafnet"] is None and models["dgno-small-face"] == "dgno-small-face"
    _tiny_checkpoint(tmp_path / "equal-nafnet" / "equal-nafnet")  # Trainer's layout
    assert bench_models.find_baseline("equal-nafnet", tmp_path) == (
        tmp_path / "equal-nafnet" / "equal-nafnet.json"
    )


def test_train_baselines_uses_the_configs(tmp_path, monkeypatch):
    import napari_dgno.train.engine as engine

    seen = []

    class FakeTrainer:
        def __init__(self, cfg):
            self.cfg = cfg

        def run(self):
            seen.append((self.cfg.name, self.cfg.output_dir, self.cfg.architecture))
            stem = Path(self.cfg.output_dir) / self.cfg.name / self.cfg.name
            _tiny_checkpoint(stem)
            return stem

    monkeypatch.setattr(engine, "Trainer", FakeTrainer)
    trained = set(bench_models.BASELINES) - {"equal-nafnet"}
    for name in trained:  # already there: not retrained
        _tiny_checkpoint(tmp_path / name)
    out = bench_models.train_baselines(tmp_path)
    assert seen == [("equal-nafnet", str(tmp_path), "nafnet")]  # its recipe, configs/equal-steps/nafnet.yaml
    assert set(out) == set(bench_models.BASELINES)
    assert all(p is not None for p in bench_models.default_models(tmp_path).values())


# -- the quick run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    checkpoint = _tiny_checkpoint(folder / "tiny")
    real = folder / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(real / "cells.tif", (100 + 50 * rng.random((96, 80))).astype(np.uint16))
    report = bench_run.run_bench(
        {"tiny": checkpoint, "absent": None, "nafnet-20k": None},
        quick=True,
        element_sweep=(8, 0),
        sweep_model="tiny",
        out=folder / "out",
        threads=1,
        real_dir=real,
    )
    return report, folder / "out"


def test_quick_run_rows_are_finite(quick_report):
    report, _ = quick_report
    prefixes = ("Blurred input", "Wiener", "Richardson–Lucy", "RL + total variation", "Patch-wise RL")
    for prefix in (*prefixes, "Spatially variant RL", "tiny"):
        row = report.row(prefix)
        values = [row.psnr, row.ssim, row.psnr_se, row.ssim_se, row.psnr_minmax, row.ssim_minmax]
        values += [row.lead_psnr, row.lead_psnr_se, row.grid_max, row.grid_median]
        assert all(v is not None and math.isfinite(v) for v in values), row
        assert len(row.jump_gain_db) == 5
    assert report.row("Blurred input").ms_per_mpx is None
    assert report.row("Wiener").ms_per_mpx > 0
    tiny = report.row("tiny")
    assert tiny.params_m > 0 and tiny.ms_per_mpx > 0
    assert report.row("absent").skipped and "train-baselines" in report.row("absent").note
    # A run added with --models NAME=PATH keeps its README label, not its bare name.
    assert report.row("NAFNet-style CNN (20,000 steps").key == "nafnet-20k"
    assert [r.method for r in report if r.kind == "element sweep"] == [
        "tiny, E = 8 px (trained)",
        "tiny, one element (E = 0, inference only)",
    ]
    for r in report:
        if r.kind == "element sweep":
            assert "trained at E = 8 px; other sizes at inference only" in r.settings
    ensemble = report.row("tiny, ×8 self-ensemble")  # the sweep model, after the network rows
    assert ensemble.kind == "network" and "self-ensemble" in ensemble.settings
    assert [r.method for r in report if r.kind == "network"][-1] == ensemble.method
    assert ensemble.params_m == tiny.params_m and ensemble.gmacs == pytest.approx(8 * tiny.gmacs)
    assert math.isfinite(ensemble.psnr) and ensemble.psnr != tiny.psnr
    assert len(list(report)) == len(report) and report[0].method == "Blurred input"
    assert report.meta["threads"] == 1 and report.meta["reference_model"] == "tiny"


def test_classical_rows_are_tuned_methods_and_labelled_oracles(quick_report):
    report, _ = quick_report
    kinds = {r.key: r.kind for r in report if r.kind in ("classical", "oracle")}
    assert kinds == {
        "wiener": "classical",
        "rl": "classical",
        "rltv": "classical",
        "patch_rl": "oracle",
        "sv_rl": "oracle",
    }
    assert (
        report.row("Spatially variant RL").method
        == "Spatially variant RL (true depth map and optics, oracle)"
    )
    c = report.meta["classical_settings"]
    assert c["rltv_weight"] > 0 and c["rltv_iterations"] >= 1 and c["wiener_radius_px"] >= 0
    assert c["tuning_fingerprint"] == tuning_set(quick=True).fingerprint
    assert "λ = " in report.row("RL + total variation").settings


def test_rows_carry_per_image_values_per_source_and_paired_leads(quick_report):
    report, _ = quick_report
    test = benchmark_set(quick=True)
    blurred, tiny, wiener = report.row("Blurred input"), report.row("tiny"), report.row("Wiener")
    assert [i["name"] for i in blurred.images] == [i.name for i in test.items]
    for image, item in zip(blurred.images, test.items, strict=True):
        assert image["source"] == item.source
        assert image["psnr"] == pytest.approx(psnr_ssim(item.blurred, item.sharp, "gt")[0])
        assert image["grid_ratio"] == pytest.approx(grid_ratio(item.blurred))
    psnrs = [i["psnr"] for i in wiener.images]
    assert wiener.psnr == pytest.approx(np.mean(psnrs))
    assert wiener.psnr_se == pytest.approx(np.std(psnrs, ddof=1) / np.sqrt(2))
    leads = [a["psnr"] - b["psnr"] for a, b in zip(tiny.images, wiener.images, strict=True)]
    assert wiener.lead_psnr == pytest.approx(np.mean(leads))
    assert tiny.lead_psnr == 0.0
    assert set(wiener.by_source) == {"cells3d", "procedural"}
    for source, stats in wiener.by_source.items():
        (value,) = [i["psnr"] for i in wiener.images if i["source"] == source]
        assert stats["n"] == 1 and stats["psnr"] == pytest.approx(value) and stats["psnr_se"] is None
    assert report.meta["jump_threshold_px"] == 1.0


def test_report_renders_and_is_written(quick_report):
    report, out = quick_report
    md = report.markdown()
    assert md.count("| Blurred input |") == 2 and "GMACs/256²" in md and "≥64 px" in md
    assert "cells3d (1) PSNR" in md and "grid ratio max / median" in md and "default − row" in md
    assert report.meta["test_set"]["fingerprint"] in md
    assert "skipped: not found" in report.plain()
    assert (out / "bench.md").read_text(encoding="utf-8") == md
    text = (out / "bench.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert [r["method"] for r in data["rows"]] == [r.method for r in report]
    assert data["meta"]["classical_settings"]["rl_iterations"] >= 1
    wiener = next(r for r in data["rows"] if r["key"] == "wiener")
    assert [i["psnr"] for i in wiener["images"]] == pytest.approx(
        [i["psnr"] for i in report.row("Wiener").images]
    )
    for rendered in (md, report.plain(), text):
        assert "upper bound" not in rendered.lower()


def test_real_images_section(quick_report):
    report, _ = quick_report
    section = report.meta["real_images"]
    assert section["model"] == "tiny" and not section["note"]
    (image,) = section["images"]
    assert image["name"] == "cells.tif" and image["shape"] == [96, 80]
    for key in (
        "grid_in",
        "grid_out",
        "sharpness_in",
        "sharpness_out",
        "noise_in",
        "noise_out",
        "noise_ratio",
    ):
        assert math.isfinite(image[key]), key
    assert (
        "Real images (no ground truth" in report.markdown() and "| cells.tif | 96x80 |" in report.markdown()
    )
    assert "cells.tif" in report.plain()


def test_cli_bench(quick_report, monkeypatch, tmp_path, capsys):
    from napari_dgno import cli

    report, _ = quick_report
    calls = []

    def fake_run_bench(models, **kwargs):
        calls.append((models, kwargs))
        return report

    monkeypatch.setattr(bench_run, "run_bench", fake_run_bench)
    code = cli.main(
        ["bench", "--quick", "--models", "mine=/x/mine.json", "--baseline-dir", str(tmp_path), "-q"]
    )
    assert code == 0
    models, kwargs = calls[0]
    assert models["mine"] == "/x/mine.json" and models["equal-nafnet"] is None
    assert kwargs["quick"] is True and kwargs["element_sweep"] == bench_run.ELEMENT_SWEEP
    assert kwargs["real_dir"] is None
    assert cli.main(["bench", "--quick", "--real", str(tmp_path), "-q"]) == 0
    assert calls[1][1]["real_dir"] == tmp_path
    assert "Blurred input" in capsys.readouterr().out
    assert cli.main(["bench", "--models", "no-equals-sign"]) == 2


def test_training_steps_add_up_every_stage_of_a_fine_tuned_model():
    from napari_dgno.bench.models import training_steps

    assert training_steps({"training": {"steps": 2000}}) == 2000
    staged = {"training": {"steps": 1200, "base_training": {"steps": 2000}}}
    assert training_steps(staged) == 3200
    assert training_steps({}) is None and training_steps({"training": {}}) is None
