"""`dgno train` and `dgno demo` from the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_dgno.cli import main
from napari_dgno.cli.demo import side_by_side
from napari_dgno.io.checkpoint import load_checkpoint, save_checkpoint
from napari_dgno.model import build_model, preset_config
from napari_dgno.train.config import TrainConfig
from napari_dgno.train.engine import Trainer

REPO = Path(__file__).resolve().parents[1]


def test_train_smoke_config_and_install(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DGNO_MODEL_DIR", str(tmp_path / "models"))
    code = main(
        [
            "train",
            "--config",
            str(REPO / "configs/smoke.yaml"),
            "--output-dir",
            str(tmp_path),
            "--steps",
            "2",
            "--install",
            "-q",
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "models" / "smoke.json").read_text())
    assert meta["training"]["steps"] == 2
    assert "step 2: val PSNR" in (tmp_path / "smoke" / "train.log").read_text()
    assert main(["models", "--json"]) == 0


def test_a_resumed_runs_progress_bar_counts_its_rate_from_the_resumed_step(tmp_path, monkeypatch):
    """Else a run resumed at step 5500 shows hundreds of steps a second and a wrong time left."""
    import tqdm

    bars = []

    class Recording(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm, "tqdm", Recording)
    args = ["train", "--config", str(REPO / "configs/smoke.yaml"), "--output-dir", str(tmp_path)]
    assert main([*args, "--steps", "2"]) == 0
    assert bars[-1].initial == 0 and bars[-1].n == 2
    assert main([*args, "--steps", "4"]) == 0
    assert bars[-1].initial == 2 and bars[-1].n == 4


def test_train_bad_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlearning_rate: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown training config keys" in err[0]
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    capsys.readouterr()
    good = tmp_path / "good.yaml"
    good.write_text("name: x\n")
    assert main(["train", "--config", str(good), "--data-workers", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_workers must be a whole number >= 0, got -1" in err[0]


@pytest.mark.slow
def test_sigkilled_training_resumes_from_its_last_checkpoint(tmp_path):
    """A run killed at a random moment continues from its last complete checkpoint, and ends with
    the weights of a run that was never killed (model, optimiser, scheduler, EMA and RNG restored).

    The kill comes a random fraction of a step after a randomly chosen checkpoint in the first half
    of the run, so that it lands mid-run however fast the machine is (a kill timed in seconds after
    the first checkpoint let the run finish first on a fast machine)."""
    steps = 24
    cmd = [
        sys.executable,
        "-m",
        "napari_dgno.cli",
        "train",
        "--config",
        str(REPO / "configs/smoke.yaml"),
        "--output-dir",
        str(tmp_path),
        "--steps",
        str(steps),
        "-q",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = np.random.default_rng()
    kill_after = int(rng.choice(np.arange(2, steps // 2 + 1, 2)))  # checkpoint_every is 2
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "smoke"
    deadline = time.time() + 120

    def newest_checkpoint() -> int:
        return max((int(p.stem.split("-")[1]) for p in run_dir.glob("step-*.json")), default=0)

    while time.time() < deadline and newest_checkpoint() < kill_after:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert kill_after <= newest_checkpoint() < steps, "the kill did not land mid-run"
    finished = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    log = (run_dir / "train.log").read_text()
    assert "resumed from step-" in log
    assert json.loads((run_dir / "smoke.json").read_text())["training"]["steps"] == steps
    assert list(run_dir.glob(".*.tmp")) == []  # a kill mid-write leaves temporaries; resume removes them
    cfg = TrainConfig.from_yaml(
        REPO / "configs/smoke.yaml", output_dir=str(tmp_path / "straight"), steps=steps
    )
    straight, _ = load_checkpoint(Trainer(cfg).run())
    resumed, _ = load_checkpoint(run_dir / "smoke")
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_demo_writes_png_and_prints_the_gain(tmp_path, capsys):
    net = build_model("dgno", preset_config("tiny"))
    save_checkpoint(tmp_path / "tiny", net, {"name": "tiny", "preset": "tiny"})
    assert main(["demo", "--model", str(tmp_path / "tiny.json"), "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "blurred" in out and "restored" in out and "dB" in out
    png = (tmp_path / "demo" / "before_after.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "demo" / "restored.tif").stat().st_size > 0


def test_side_by_side_uses_one_display_range():
    ref = np.linspace(0, 100, 64 * 64).reshape(64, 64)
    panel = side_by_side([ref, ref * 2], ref, gap=4)
    assert panel.shape == (64, 64 * 2 + 4) and panel.dtype == np.uint8
    assert panel[:, 64:68].min() == 255  # white gap
    assert panel[:, 68:].mean() > panel[:, :64].mean()
