"""Data-parallel training: 2 processes under torchrun (gloo, CPU, loopback) follow one process.

Each rank takes half of the same global batch, so 2 x B/2 must give the single-process run with
batch B up to float reduction order. This file is also the torchrun worker (``__main__`` below).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_dgno.io.checkpoint import load_checkpoint
from napari_dgno.train import distributed
from napari_dgno.train import state as ckpt
from napari_dgno.train.engine import Callbacks, Trainer
from test_train import TinySource, _config

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 4
LOSS_RTOL = 1e-4  # measured: 1.2e-7 (float reduction order only); a wrong shard: 1.4e-2
WEIGHT_ATOL = 1e-5  # measured: 1.7e-6 (AdamW steps amplify reduction-order noise); a wrong shard: 6e-3


def _settings(out: Path):
    return _config(out, batch_size=GLOBAL_BATCH, steps=6, checkpoint_every=2, val_every=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args, nproc=2, timeout=180):
    """Run ``args`` under torchrun on loopback; gloo is told to use the loopback interface too."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    launcher += ["--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1"]
    launcher += ["--master_port", str(_free_port())]
    return subprocess.run(
        [*launcher, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _weights(stem):
    model, _ = load_checkpoint(stem)
    return model.state_dict()


def _single_process_reference(out: Path):
    losses = []
    stem = Trainer(_settings(out), TinySource, Callbacks(on_step=lambda i: losses.append(i.loss))).run()
    return losses, stem


def test_two_gloo_ranks_match_one_process_and_resume(tmp_path):
    """Stopped after 3 of 6 steps, then resumed, under DDP: same losses and weights as one process."""
    ref_losses, ref_stem = _single_process_reference(tmp_path / "single")
    out = tmp_path / "ddp"
    first = _torchrun(__file__, out, 3)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [s for s, _ in ckpt.checkpoints(out / "t")][0] == 3  # the stop saved a checkpoint
    second = _torchrun(__file__, out, 0)
    assert second.returncode == 0, second.stderr[-3000:]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["backend"] == "gloo" for r in ranks), ranks
    lines = (out / "losses.jsonl").read_text().splitlines()
    steps, losses = zip(*(json.loads(line) for line in lines), strict=True)
    assert steps == (1, 2, 3, 4, 5, 6)  # rank 0 alone reports; the second run resumed at step 3
    np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL)
    a, b = _weights(ref_stem), _weights(out / "t" / "t")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=WEIGHT_ATOL)
    _, meta = load_checkpoint(out / "t" / "t")
    assert meta["training"]["steps"] == 6 and [h["step"] for h in meta["training"]["history"]] == [0, 3, 6]


@pytest.mark.slow
def test_torchrun_cli_with_the_smoke_config(tmp_path):
    """The documented command: torchrun ... -m napari_dgno.cli train --config configs/smoke.yaml."""
    result = _torchrun(
        "-m", "napari_dgno.cli", "train", "--config", REPO / "configs/smoke.yaml",
        "--output-dir", tmp_path, "--steps", "2", "--threads", "1", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("model written to") == 1  # rank 0 alone reports
    log = (tmp_path / "smoke" / "train.log").read_text()
    assert log.count("step 2: val PSNR") == 1
    _, meta = load_checkpoint(tmp_path / "smoke" / "smoke")
    assert meta["training"]["steps"] == 2


def test_uneven_batch_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="multiple of 3"):
        Trainer(_settings(tmp_path), TinySource)


def test_single_process_helpers_are_no_ops():
    ctx = distributed.Context.from_env(torch.device("cpu"))
    batch = torch.arange(6.0)
    assert not ctx.enabled and ctx.shard(batch) is batch and ctx.mean(torch.tensor(2.5)) == 2.5
    assert ctx.any(True) and not ctx.any(False) and ctx.wrap(torch.nn.Linear(1, 1)) is None
    ctx.same(4, "anything")
    ctx.barrier()
    two = distributed.Context(rank=1, world=2)
    assert torch.equal(two.shard(batch), torch.tensor([3.0, 4.0, 5.0]))


# ---------------------------------------------------------------------------------------------------
# The torchrun worker: python -m torch.distributed.run ... tests/test_ddp.py OUT STOP_AFTER


def _worker(out: Path, stop_after: int) -> None:
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    done = {"steps": 0}

    def on_step(info):
        done["steps"] += 1
        with open(out / "losses.jsonl", "a") as f:
            f.write(json.dumps([info.step, info.loss]) + "\n")

    def should_stop():
        record = {"world": dist.get_world_size(), "backend": dist.get_backend()}
        (out / f"rank{rank}.json").write_text(json.dumps(record))
        return bool(stop_after) and done["steps"] >= stop_after  # only rank 0 counts: any rank stops all

    Trainer(_settings(out), TinySource, Callbacks(on_step=on_step, should_stop=should_stop)).run()


if __name__ == "__main__":
    torch.set_num_threads(1)
    _worker(Path(sys.argv[1]), int(sys.argv[2]))
