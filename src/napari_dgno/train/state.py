"""Training state as tensors + JSON, so a run killed at any moment resumes exactly.

A run directory holds numbered checkpoints ``step-000300.{safetensors,state.safetensors,json}``; the
JSON is written last, so a checkpoint counts only once it is complete. The newest two are kept: if the
newest is damaged, resuming falls back to the one before it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..io.checkpoint import load_extra_tensors, state_path

KEEP = 2
_STEP_FILE = re.compile(r"^step-(\d{6,})\.json$")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer's state into tensors (for safetensors) and plain values (for JSON)."""
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for pid, slots in state["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{slot}"] = value.detach().clone()
            else:
                plain[f"{pid}.{slot}"] = value
    return tensors, {"param_groups": state["param_groups"], "values": plain}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, plain: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        pid, slot = key.split(".", 1)
        state.setdefault(int(pid), {})[slot] = value
    for key, value in plain["values"].items():
        pid, slot = key.split(".", 1)
        state.setdefault(int(pid), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": plain["param_groups"]})
    # Saved tensors come back contiguous; give each moment its parameter's layout (channels-last
    # convolution weights), so the optimiser's element-wise updates run on matching strides.
    for param, slots in optimizer.state.items():
        for slot, value in slots.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                slots[slot] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def rng_state(np_rng: np.random.Generator) -> tuple[dict, dict]:
    """torch's CPU RNG as a uint8 tensor, numpy's bit generator state as JSON."""
    return {"torch": torch.get_rng_state()}, {"numpy": np_rng.bit_generator.state}


def restore_rng(np_rng: np.random.Generator, tensors: dict, plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    np_rng.bit_generator.state = plain["numpy"]


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, stem) of every complete checkpoint in ``run_dir``, newest first."""
    found = []
    for path in Path(run_dir).glob("step-*.json"):
        match = _STEP_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path.with_suffix("")))
    return sorted(found, reverse=True)


def stem_for(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"step-{step:06d}"


def load_state_tensors(stem: Path, meta: dict | None = None) -> dict:
    """The training-state groups (optim, ema, rng) saved beside a checkpoint's weights.

    With the checkpoint's ``meta``, the state file must also match the SHA-256 its JSON records: a
    run killed while rewriting a step's files must not pair new optimiser state with old weights.
    """
    info = (meta or {}).get("state")
    recorded = info.get("sha256") if isinstance(info, dict) else None
    if recorded:
        spath = state_path(stem)
        digest = hashlib.sha256()
        try:
            with open(spath, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as err:
            raise CheckpointError(f"cannot read {spath.name}: {err.strerror or err}") from None
        if digest.hexdigest() != recorded:
            raise CheckpointError(f"{spath.name} does not match {stem.name}.json (SHA-256 differs)")
    groups = load_extra_tensors(stem)
    missing = {"optim", "ema", "rng"} - set(groups)
    if missing:
        raise CheckpointError(f"{stem.name} has no training state ({', '.join(sorted(missing))} missing)")
    return groups


def remove_temporaries(run_dir: Path) -> None:
    """Delete ``.NAME.*.tmp`` files that a run killed mid-write left (atomic writes use them)."""
    for path in Path(run_dir).glob(".*.tmp"):
        path.unlink(missing_ok=True)


def prune(run_dir: Path, keep: int = KEEP) -> None:
    """Delete all but the newest ``keep`` checkpoints (JSON first, so none is left half-valid)."""
    for _, stem in checkpoints(run_dir)[keep:]:
        for suffix in (".json", ".safetensors", ".state.safetensors"):
            stem.with_name(stem.name + suffix).unlink(missing_ok=True)
