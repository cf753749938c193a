"""scripts/pack_runs.sh: what a GPU session brings back of each run (its model, or a checkpoint)."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# None: runs that only ever trained on the GPU; training/equal-steps: runs resumed from CPU checkpoints
@pytest.mark.parametrize("run_dir", [None, "training/equal-steps"])
def test_each_run_comes_back_with_its_model_or_its_newest_checkpoint(tmp_path, run_dir):
    configs = {"face": "equal-dgno-face", "nafnet": "equal-nafnet"}
    d = run_dir or "runs"  # where the run folders are; progress logs stay in runs/
    runs = tmp_path / d
    (tmp_path / "runs").mkdir()
    for stem, name in configs.items():
        (tmp_path / f"{stem}.yaml").write_text(f"name: {name}\n")
        (runs / name).mkdir(parents=True)
        (tmp_path / "runs" / f"{stem}.log").write_text("progress\n")
        (runs / name / "train.log").write_text("log\n")
    unfinished = runs / "equal-dgno-face"
    for step in ("000100", "000200"):
        for suffix in ("json", "safetensors", "state.safetensors"):
            (unfinished / f"step-{step}.{suffix}").write_text("x")
    finished = runs / "equal-nafnet"
    for suffix in ("json", "safetensors"):
        (finished / f"equal-nafnet.{suffix}").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if run_dir:
        env["RUN_DIR"] = run_dir
    subprocess.run(
        ["bash", str(REPO / "scripts" / "pack_runs.sh"), "face.yaml", "nafnet.yaml"],
        cwd=tmp_path, env=env, check=True,
    )  # fmt: skip
    packed = {p.name: sorted(tarfile.open(p).getnames()) for p in out.iterdir()}
    assert packed == {
        "equal-dgno-face.tar": sorted(
            [
                f"{d}/equal-dgno-face/step-000200.json",
                f"{d}/equal-dgno-face/step-000200.safetensors",
                f"{d}/equal-dgno-face/step-000200.state.safetensors",
                f"{d}/equal-dgno-face/train.log",
                "runs/face.log",
            ]
        ),
        "equal-nafnet.tar": sorted(
            [
                f"{d}/equal-nafnet/equal-nafnet.json",
                f"{d}/equal-nafnet/equal-nafnet.safetensors",
                f"{d}/equal-nafnet/train.log",
                "runs/nafnet.log",
            ]
        ),
    }


def test_the_training_queue_runs_each_entry_and_resumes_finished_ones_cheaply(tmp_path):
    """scripts/train_queue.sh: the command that carries long CPU runs from session to session."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TRAIN_ARGS": "--steps 2",
        "THREADS": "1",
    }
    smoke = REPO / "configs" / "smoke.yaml"
    entries = [f"{tmp_path / 'a'}={smoke}", f"{tmp_path / 'b'}={smoke}"]
    queue = ["bash", str(REPO / "scripts" / "train_queue.sh"), *entries]
    first = subprocess.run(queue, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    for folder in ("a", "b"):
        assert (tmp_path / folder / "smoke" / "smoke.safetensors").is_file()
    assert first.stdout.count("(exit 0)") == 2
    again = subprocess.run(queue, env=env, capture_output=True, text=True, timeout=600)
    assert again.stdout.count("(exit 0)") == 2
    assert (tmp_path / "a" / "smoke" / "train.log").read_text().count("resumed from step-") == 1
