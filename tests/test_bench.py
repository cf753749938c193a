"""`dgno bench`: frozen test set, jump-distance bins, the quick run end to end, the command line.

The benchmark measures and reports; nothing here asserts a speed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_dgno.bench import jumps
from napari_dgno.bench import run as bench_run
from napari_dgno.bench.classical import _psnr
from napari_dgno.bench.testset import MAX_DEFOCUS_UM, benchmark_set, tuning_set
from napari_dgno.io.checkpoint import save_checkpoint
from napari_dgno.metrics import psnr_ssim
from napari_dgno.model import build_model, preset_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    for item in a.items:
        assert item.blurred.shape == item.sharp.shape == item.depth.shape == (256, 256)
        assert 0 <= item.depth.min() and item.depth.max() <= MAX_DEFOCUS_UM
        assert item.blurred.max() <= 4095 and item.sharp.min() > 0  # 12-bit camera with an offset


def test_tuning_set_is_not_the_test_set():
    test, tune = benchmark_set(quick=True), tuning_set(quick=True)
    assert test.fingerprint != tune.fingerprint
    cells = lambda s: {i.name for i in s.items if i.name.startswith("cells3d")}  # noqa: E731
    assert not cells(test) & cells(tune)  # held-out slices are never used for tuning


def test_test_set_physics_matches_training_config():
    config = yaml.safe_load((REPO / "configs" / "dgno-small-face.yaml").read_text())
    assert config["data"]["max_defocus_um"] == MAX_DEFOCUS_UM


# -- distance to depth jumps -----------------------------------------------------------------------


def test_jump_distance_bins_on_a_hand_made_depth_map():
    """Two halves (2 and 10 µm) with a smooth tilt down the rows: only the jump counts."""
    depth = np.full((32, 64), 2.0)
    depth[:, 32:] = 10.0
    depth += 0.05 * np.arange(32)[:, None]  # 0.05 µm/px tilt: not a jump
    mask = jumps.jump_mask(depth)
    assert mask[:, 31].all() and mask[:, 32].all() and mask.sum() == 2 * 32
    distance = jumps.jump_distance(depth)
    np.testing.assert_array_equal(distance[0, :32], 31 - np.arange(32))
    np.testing.assert_array_equal(distance[0, 32:], np.arange(32))
    counts = np.bincount(jumps.bin_index(distance).ravel(), minlength=5)
    # [0, 8): columns 24-39; [8, 16): 16-23 and 40-47; [16, 32): 0-15 and 48-63; nothing further.
    np.testing.assert_array_equal(counts, [16 * 32, 16 * 32, 32 * 32, 0, 0])
    assert jumps.bin_labels() == ["0–8 px", "8–16 px", "16–32 px", "32–64 px", "≥64 px"]


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


# -- finding and training the baselines ------------------------------------------------------------


def test_missing_baselines_are_none_and_found_where_training_puts_them(tmp_path):
    models = bench_run.default_models(tmp_path)
    assert models["baseline-nafnet"] is None and models["dgno-small-face"] == "dgno-small-face"
    _tiny_checkpoint(tmp_path / "baseline-nafnet" / "baseline-nafnet")  # Trainer's layout
    assert bench_run.find_baseline("baseline-nafnet", tmp_path) == (
        tmp_path / "baseline-nafnet" / "baseline-nafnet.json"
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
    _tiny_checkpoint(tmp_path / "baseline-global-no")  # already there: not retrained
    out = bench_run.train_baselines(tmp_path)
    assert seen == [("baseline-nafnet", str(tmp_path), "nafnet")]
    assert set(out) == {"baseline-nafnet", "baseline-global-no"}
    assert all(p is not None for p in bench_run.default_models(tmp_path).values())


# -- the quick run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    checkpoint = _tiny_checkpoint(folder / "tiny")
    report = bench_run.run_bench(
        {"tiny": checkpoint, "absent": None},
        quick=True,
        element_sweep=(8, 0),
        sweep_model="tiny",
        out=folder / "out",
        threads=1,
    )
    return report, folder / "out"


def test_quick_run_rows_are_finite(quick_report):
    report, _ = quick_report
    for prefix in ("Blurred input", "Wiener", "Richardson–Lucy", "Spatially variant RL", "tiny"):
        row = report.row(prefix)
        values = [row.psnr, row.ssim, row.psnr_minmax, row.ssim_minmax]
        assert all(v is not None and math.isfinite(v) for v in values), row
        assert len(row.jump_gain_db) == 5
    assert report.row("Blurred input").ms_per_mpx is None
    assert report.row("Wiener").ms_per_mpx > 0
    tiny = report.row("tiny")
    assert tiny.params_m > 0 and tiny.ms_per_mpx > 0
    assert report.row("absent").skipped and "train-baselines" in report.row("absent").note
    assert [r.method for r in report if r.kind == "element sweep"] == [
        "tiny, E = 8 px (trained)",
        "tiny, one element (E = 0)",
    ]
    ensemble = report.row("tiny, ×8 self-ensemble")  # the sweep model, after the network rows
    assert ensemble.kind == "network" and "self-ensemble" in ensemble.settings
    assert [r.method for r in report if r.kind == "network"][-1] == ensemble.method
    assert ensemble.params_m == tiny.params_m and ensemble.gmacs == pytest.approx(8 * tiny.gmacs)
    assert math.isfinite(ensemble.psnr) and ensemble.psnr != tiny.psnr
    assert len(list(report)) == len(report) and report[0].method == "Blurred input"
    assert report.meta["threads"] == 1


def test_report_renders_and_is_written(quick_report):
    report, out = quick_report
    md = report.markdown()
    assert md.count("| Blurred input |") == 1 and "GMACs/256²" in md and "≥64 px" in md
    assert report.meta["test_set"]["fingerprint"] in md
    assert "skipped: not found" in report.plain()
    assert (out / "bench.md").read_text(encoding="utf-8") == md
    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert [r["method"] for r in data["rows"]] == [r.method for r in report]
    assert data["meta"]["classical_settings"]["rl_iterations"] >= 1


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
    assert models["mine"] == "/x/mine.json" and models["baseline-nafnet"] is None
    assert kwargs["quick"] is True and kwargs["element_sweep"] == bench_run.ELEMENT_SWEEP
    assert "Blurred input" in capsys.readouterr().out
    assert cli.main(["bench", "--models", "no-equals-sign"]) == 2


def test_training_steps_add_up_every_stage_of_a_fine_tuned_model():
    from napari_dgno.bench.run import training_steps

    assert training_steps({"training": {"steps": 2000}}) == 2000
    staged = {"training": {"steps": 1200, "base_training": {"steps": 2000}}}
    assert training_steps(staged) == 3200
    assert training_steps({}) is None and training_steps({"training": {}}) is None
