"""Which checkpoints exist, read from their JSON and safetensors headers alone, without torch.

Why: ``dgno models`` must answer in well under two seconds, and importing torch alone takes about
that. The registry lists models through the same functions with its full, torch-backed validation
(:func:`napari_dgno.io.checkpoint.read_metadata`); ``dgno models`` uses the light check here, and
a file it lists that cannot be built still fails, in one line, when it is loaded.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path

FORMAT = "napari-dgno-checkpoint"
META_SUFFIX = ".json"
WEIGHTS_SUFFIX = ".safetensors"
SHIPPED_INDEX = "models.json"
MODEL_DIR_ENV = "NAPARI_DGNO_MODEL_DIR"
# The same as napari_dgno.model.ARCHITECTURES' names, which would import torch (pinned by a test).
ARCHITECTURE_NAMES = ("dgno", "nafnet")
_MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one we wrote


def shipped_model_dir() -> Path:
    """Checkpoints that ship inside the package (``napari_dgno/weights``)."""
    return Path(__file__).resolve().parent.parent / "weights"


def user_model_dir() -> Path:
    """The user's own (fine-tuned) models: ``$NAPARI_DGNO_MODEL_DIR`` or the platform data folder."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-dgno")) / "models"


def shipped_index(folder: Path) -> dict:
    """``models.json``: ``{"default": NAME, "models": [NAME, ...]}`` (both optional); ValueError if
    it is not JSON."""
    path = folder / SHIPPED_INDEX
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    return index if isinstance(index, dict) else {}


def is_checkpoint_json(path: str | os.PathLike) -> bool:
    """True for a JSON file that claims to be a napari-dgno checkpoint (cheap; not validated)."""
    path = Path(path)
    if not path.name.endswith(META_SUFFIX) or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return FORMAT in head


def checkpoints_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.glob("*" + META_SUFFIX) if p.name != SHIPPED_INDEX and is_checkpoint_json(p)
    )


def read_json(path: Path) -> dict:
    """A checkpoint's JSON with the checks that need no network code; ValueError with the reason."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path.name} is not a readable checkpoint JSON ({type(err).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path.name} is not a napari-dgno checkpoint")
    if meta.get("architecture") not in ARCHITECTURE_NAMES or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path.name}: unknown architecture {meta.get('architecture')!r} or no config")
    return meta


def header_values(weights: Path) -> int | None:
    """How many values the tensors of a safetensors file hold, from its JSON header (no tensor
    read); None if the file is missing or not safetensors."""
    try:
        with open(weights, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > _MAX_HEADER:
                return None
            header = json.loads(f.read(length))
        return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError):
        return None


def training_summary(meta: dict) -> dict:
    """Steps over every stage of a model's training, and its validation PSNR beside the blurred
    input's on the same set. Why both: validation sets differ between recipes (an earlier one was
    easier), so a PSNR alone compares models across sets; the gain over the input does not."""
    training = meta.get("training")
    if not isinstance(training, dict):
        return {}
    steps, stage = 0, training
    while isinstance(stage, dict):
        steps += int(stage.get("steps") or 0)
        stage = stage.get("base_training")
    out = {"steps": steps}
    history = training.get("history") or []
    try:
        psnr, input_psnr = float(meta["metrics"]["psnr"]), float(history[0]["input"]["psnr"])
    except (KeyError, IndexError, TypeError, ValueError):
        return out
    return {**out, "val_psnr": psnr, "val_input_psnr": input_psnr}


def entry(path: Path, source: str, read: Callable[[Path], dict] = read_json) -> dict:
    """One listing row from a checkpoint's JSON; an unreadable one carries ``error`` instead."""
    name = path.name[: -len(META_SUFFIX)]
    weights = path.with_name(name + WEIGHTS_SUFFIX)
    row = {"name": name, "source": source, "path": str(weights)}
    try:
        meta = read(path)
    except Exception as err:  # CheckpointError from the registry's reader, ValueError from ours
        row["error"] = str(err)
        return row
    params = meta.get("params")
    row.update(
        name=meta.get("name") or name,
        architecture=meta["architecture"],
        preset=meta.get("preset"),
        flux=meta.get("flux", meta["config"].get("flux")),
        element_size=meta.get("element_size", meta["config"].get("element_size")),
        params=params if isinstance(params, int) else header_values(weights),
        metrics=meta.get("metrics") or {},
        created=meta.get("created"),
        **training_summary(meta),
    )
    return row


def shipped_entries(folder: Path, read: Callable[[Path], dict] = read_json, index=None) -> list[dict]:
    """The shipped models in ``models.json``'s order (then by name), the default marked."""
    index = shipped_index(folder) if index is None else index
    order = {n: i for i, n in enumerate(index.get("models", []))}
    shipped = [entry(p, "shipped", read) for p in checkpoints_in(folder)]
    shipped.sort(key=lambda e: (order.get(e["name"], len(order)), e["name"]))
    default = pick_default(shipped, index)
    for e in shipped:
        e["default"] = e["name"] == default
    return shipped


def pick_default(shipped: list[dict], index: dict, flux: str | None = None) -> str | None:
    """``models.json``'s default, else the first shipped model; with ``flux``, among those trained
    with it. None when nothing suitable ships."""
    names = [e["name"] for e in shipped if "error" not in e and (flux is None or e.get("flux") == flux)]
    if not names:
        return None
    return index.get("default") if index.get("default") in names else names[0]


def list_entries(shipped: Path, user: Path, read: Callable[[Path], dict] = read_json) -> list[dict]:
    """Shipped, then user models (see :func:`entry`)."""
    return shipped_entries(shipped, read) + [entry(p, "user", read) for p in checkpoints_in(user)]
