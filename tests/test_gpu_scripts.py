"""scripts/pack_runs.sh: what a GPU session brings back of each run (its model, or a checkpoint)."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_each_run_comes_back_with_its_model_or_its_newest_checkpoint(tmp_path):
    configs = {"face": "equal-dgno-face", "nafnet": "equal-nafnet"}
    for stem, name in configs.items():
        (tmp_path / f"{stem}.yaml").write_text(f"name: {name}\n")
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / f"{stem}.log").write_text("progress\n")
        (tmp_path / "runs" / name / "train.log").write_text("log\n")
    unfinished = tmp_path / "runs" / "equal-dgno-face"
    for step in ("000100", "000200"):
        for suffix in ("json", "safetensors", "state.safetensors"):
            (unfinished / f"step-{step}.{suffix}").write_text("x")
    finished = tmp_path / "runs" / "equal-nafnet"
    for suffix in ("json", "safetensors"):
        (finished / f"equal-nafnet.{suffix}").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(
        ["bash", str(REPO / "scripts" / "pack_runs.sh"), "face.yaml", "nafnet.yaml"],
        cwd=tmp_path, env=env, check=True,
    )  # fmt: skip
    packed = {p.name: sorted(tarfile.open(p).getnames()) for p in out.iterdir()}
    assert packed == {
        "equal-dgno-face.tar": [
            "runs/equal-dgno-face/step-000200.json",
            "runs/equal-dgno-face/step-000200.safetensors",
            "runs/equal-dgno-face/step-000200.state.safetensors",
            "runs/equal-dgno-face/train.log",
            "runs/face.log",
        ],
        "equal-nafnet.tar": [
            "runs/equal-nafnet/equal-nafnet.json",
            "runs/equal-nafnet/equal-nafnet.safetensors",
            "runs/equal-nafnet/train.log",
            "runs/nafnet.log",
        ],
    }
