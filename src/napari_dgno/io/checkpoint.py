"""Checkpoints: ``NAME.safetensors`` (tensors) + ``NAME.json`` (everything needed to rebuild the network).

Why two files: safetensors cannot run code when loaded (pickle can), and a JSON sidecar can be read,
listed and diffed without touching the tensors. The JSON records the SHA-256 of the tensor file, so a
pair whose halves come from different saves (or a tensor file that was damaged) is refused rather than
loaded with the wrong metadata. Writing is atomic: each file goes to a temporary name in the same
folder, is fsync'ed and then renamed over the destination, tensors first and JSON last.

Optional extra tensor groups (optimizer moments, EMA weights ...) for the training engine go into a
third file, ``NAME.state.safetensors``; inference never reads it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError, one_line
from ..model import ARCHITECTURES, FLUX_VARIANTS, architecture_of, build_model, count_parameters
from ..model.config import check_element_size
from .atomic import atomic_path
from .catalog import FORMAT, META_SUFFIX, WEIGHTS_SUFFIX  # torch-free there: `dgno models` is fast

FORMAT_VERSION = 1
STATE_SUFFIX = ".state.safetensors"
# Files that torch.save / pickle produce; they are refused by name *and* by content.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}
_REQUIRED_KEYS = ("format", "format_version", "architecture", "config")


# ---------------------------------------------------------------------------------------------------
# Paths


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    name = path.name
    for suffix in (STATE_SUFFIX, WEIGHTS_SUFFIX, META_SUFFIX):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem = path.with_name(name)
    return stem.with_name(name + WEIGHTS_SUFFIX), stem.with_name(name + META_SUFFIX)


def state_path(path: str | os.PathLike) -> Path:
    weights, _ = checkpoint_paths(path)
    return weights.with_name(weights.name[: -len(WEIGHTS_SUFFIX)] + STATE_SUFFIX)


def _fail(message: str) -> CheckpointError:
    return CheckpointError(one_line(message))


def _looks_like_pickle(head: bytes) -> bool:
    """Pickle protocol 2+ starts with 0x80 <proto>; torch.save's zip container with 'PK\\x03\\x04'."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head.startswith(b"PK\x03\x04")


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _fail(
            f"refusing to load {path.name}: pickle checkpoints can run arbitrary code; "
            "napari-dgno loads only NAME.safetensors + NAME.json"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flatten_extra(extra: Mapping) -> dict[str, torch.Tensor]:
    """``{"optimizer": {"exp_avg.0": t}}`` -> ``{"optimizer/exp_avg.0": t}`` (one level of groups)."""
    flat = {}
    for key, value in extra.items():
        if isinstance(value, Mapping):
            for sub, tensor in value.items():
                flat[f"{key}/{sub}"] = tensor
        else:
            flat[str(key)] = value
    for key, value in flat.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"extra tensor {key!r} is a {type(value).__name__}; put non-tensors in meta")
    return flat


def _tensors_for_saving(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that do not share storage.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def _save_tensors(tensors: Mapping[str, torch.Tensor], dest: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(dest) as tmp:
        save_file(_tensors_for_saving(tensors), str(tmp), metadata=metadata)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    meta: Mapping | None = None,
    extra_tensors: Mapping | None = None,
) -> Path:
    """Write ``NAME.safetensors`` + ``NAME.json`` (and ``NAME.state.safetensors`` if extras given).

    ``meta`` supplies the free fields (``name``, ``preset``, ``element_size``, ``flux``,
    ``normalization``, ``training``, ``metrics``, and any extra keys); ``architecture``, ``config``,
    ``params`` and the file hashes always come from ``model`` and the written files. ``element_size``
    and ``flux`` default to the model's config (they are run-time options: the weights do not depend
    on them). ``extra_tensors`` is ``{key: tensor}`` or ``{group: {key: tensor}}``; see
    :func:`load_extra_tensors`. Returns the JSON path.
    """
    weights_path, meta_path = checkpoint_paths(path)
    meta = dict(meta or {})
    architecture = architecture_of(model)
    config = model.config.to_dict()
    name = meta.pop("name", None) or meta_path.name[: -len(META_SUFFIX)]
    element_size = meta.pop("element_size", config.get("element_size"))
    flux = meta.pop("flux", config.get("flux"))
    _check_runtime_options(architecture, config, element_size, flux, "meta")
    for key in ("format", "format_version", "architecture", "config", "params", "weights", "state"):
        meta.pop(key, None)
    weights_path.parent.mkdir(parents=True, exist_ok=True)

    file_info = {"format": FORMAT, "architecture": architecture, "name": name}
    state_info = None
    if extra_tensors:
        extra = _flatten_extra(extra_tensors)
        spath = state_path(weights_path)
        _save_tensors(extra, spath, file_info)
        state_info = {"file": spath.name, "sha256": _sha256(spath), "tensors": len(extra)}
    _save_tensors(model.state_dict(), weights_path, file_info)

    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "architecture": architecture,
        "config": config,
        "preset": meta.pop("preset", None),
        "element_size": element_size,
        "flux": flux,
        "normalization": meta.pop("normalization", dict(DEFAULT_NORMALIZATION)),
        "training": meta.pop("training", {}),
        "metrics": meta.pop("metrics", {}),
        "params": count_parameters(model),
        "package_version": meta.pop("package_version", __version__),
        "created": meta.pop("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
        "weights": {"file": weights_path.name, "sha256": _sha256(weights_path)},
    }
    if state_info:
        record["state"] = state_info
    record.update(meta)  # any further keys the caller wants to keep
    text = json.dumps(record, indent=2, allow_nan=False, default=_json_default) + "\n"
    with atomic_path(meta_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return meta_path


def _json_default(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------------------
# Reading and validating


def _check_runtime_options(architecture, config: dict, element_size, flux, where: str) -> None:
    if architecture != "dgno":
        return
    try:
        check_element_size(element_size, len(config.get("enc_blocks", (0, 0, 0, 0))) - 1)
    except ValueError as err:
        raise _fail(f"{where}: {err}") from None
    if flux not in FLUX_VARIANTS:
        raise _fail(f"{where}: flux must be one of {', '.join(FLUX_VARIANTS)}, got {flux!r}")


def read_metadata(path: str | os.PathLike) -> dict:
    """The validated JSON of a checkpoint, without reading its tensors (for listings)."""
    path = Path(path)
    _refuse_pickle(path)
    weights_path, meta_path = checkpoint_paths(path)
    if not meta_path.is_file():
        raise _fail(_missing_message(weights_path, meta_path))
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _fail(f"{meta_path.name} is not valid JSON ({err})") from None
    except RecursionError:  # "[[[[..." a hundred thousand deep
        raise _fail(f"{meta_path.name} is not a checkpoint's JSON (nested too deeply)") from None
    except OSError as err:
        raise _fail(f"cannot read {meta_path}: {err.strerror or err}") from None
    _validate_meta(meta, meta_path.name)
    return meta


def _missing_message(weights_path: Path, meta_path: Path) -> str:
    stem = meta_path.with_name(meta_path.name[: -len(META_SUFFIX)])
    pickles = [stem.with_name(stem.name + s) for s in PICKLE_SUFFIXES]
    found = [p.name for p in pickles if p.exists()]
    if found:
        return (
            f"checkpoint not found: {stem} (found {found[0]}, a pickle file, which napari-dgno "
            "never loads; it needs NAME.safetensors + NAME.json)"
        )
    missing = [p.name for p in (weights_path, meta_path) if not p.is_file()]
    return f"checkpoint not found: {stem} (missing {' and '.join(missing)})"


def _validate_meta(meta, where: str) -> None:
    if not isinstance(meta, dict):
        raise _fail(f"{where}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if meta.get("format") != FORMAT:
        raise _fail(f"{where} is not a napari-dgno checkpoint (format {meta.get('format')!r})")
    if missing:
        raise _fail(f"{where}: missing keys {', '.join(missing)}")
    version = meta["format_version"]
    if not isinstance(version, int) or version < 1:
        raise _fail(f"{where}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise _fail(
            f"{where}: format_version {version} is newer than this napari-dgno understands "
            f"({FORMAT_VERSION}); upgrade napari-dgno"
        )
    architecture = meta["architecture"]
    if architecture not in ARCHITECTURES:
        raise _fail(
            f"{where}: unknown architecture {architecture!r} (known: {', '.join(sorted(ARCHITECTURES))})"
        )
    config = meta["config"]
    if not isinstance(config, dict):
        raise _fail(f"{where}: config must be a JSON object")
    try:
        config_obj = ARCHITECTURES[architecture][0].from_dict(config)
    except (TypeError, ValueError) as err:
        raise _fail(f"{where}: invalid {architecture} config ({err})") from None
    full = config_obj.to_dict()
    element_size = meta.get("element_size", full.get("element_size"))
    flux = meta.get("flux", full.get("flux"))
    _check_runtime_options(architecture, full, element_size, flux, where)


def _check_safetensors_file(path: Path) -> None:
    """Cheap structural checks before handing the file to safetensors (and never to pickle)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as err:
        raise _fail(f"cannot read {path}: {err.strerror or err}") from None
    if _looks_like_pickle(head):
        raise _fail(f"refusing to load {path.name}: it is a pickle/torch.save file, not safetensors")
    if size < 9:
        raise _fail(f"{path.name} is truncated or not a safetensors file ({size} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len + 8 > size or head[8:9] != b"{":
        raise _fail(f"{path.name} is truncated or not a safetensors file")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    _check_safetensors_file(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorError and friends: corrupt header, truncated data
        raise _fail(f"{path.name} is corrupt or truncated ({err})") from None


def _check_state_dict(tensors: dict, expected: dict, name: str) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]!r})")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} tensors with other shapes (e.g. {k!r}: file {tuple(tensors[k].shape)}, "
            f"config {tuple(expected[k].shape)})"
        )
    bad_dtype = [k for k, t in tensors.items() if not t.is_floating_point()]
    bad_dtype = [k for k in bad_dtype if k in expected and expected[k].is_floating_point()]
    if bad_dtype:
        problems.append(f"non-float tensor {bad_dtype[0]!r}")
    if problems:
        raise _fail(f"{name} does not match the architecture in its JSON: {'; '.join(problems)}")


def _stored_names(path: Path) -> list[str]:
    """The names of the tensors in a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as err:  # SafetensorError and friends: a corrupt header
        raise _fail(f"{path.name} is corrupt or truncated ({err})") from None


def _check_network_fits(meta: dict, meta_path: Path, weights_path: Path) -> None:
    """Refuse a JSON whose network is bigger than its tensor file before building it.

    A config that lies would otherwise be built first: 10000 blocks take many seconds, width 100000
    takes all memory. The config's own fields are bounded when it is read
    (:class:`~napari_dgno.model.config.DGNOConfig`); here every block must have at least one tensor in
    the file's header, and a lower bound on the network's values, computed from the config without
    building anything, must fit in the file's bytes. Smaller mismatches get the detailed shape check
    after loading. (Sizing by building on the ``meta`` device imported torch's Python decompositions,
    which cost every `dgno deblur` call ~2 s.)
    """
    config = ARCHITECTURES[meta["architecture"]][0].from_dict(meta["config"])
    tensors = len(_stored_names(weights_path))
    blocks = config.block_count()
    if blocks > tensors:
        raise _fail(
            f"{meta_path.name} describes a network of {blocks:,} blocks, more than the {tensors:,} "
            f"tensors in {weights_path.name} can hold"
        )
    values = config.min_values()
    size = weights_path.stat().st_size
    if values > size:  # at least 2 bytes a value
        raise _fail(
            f"{meta_path.name} describes a network of at least {values:,} values, more than "
            f"{weights_path.name} ({size:,} bytes) can hold"
        )


def load_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[nn.Module, dict]:
    """Build the network described by the JSON and load its tensors; ``(model in eval mode, meta)``
    on ``device``, a torch device (or its name) the caller has resolved (``napari_dgno.devices``).

    Accepts ``NAME.safetensors``, ``NAME.json`` or ``NAME``. Never unpickles: ``.pt``/``.pth``/
    ``.ckpt`` files, and any file whose bytes start like a pickle, are refused. Every failure is a
    :class:`CheckpointError` with a one-line reason.
    """
    path = Path(path)
    _refuse_pickle(path)
    weights_path, meta_path = checkpoint_paths(path)
    if not weights_path.is_file() or not meta_path.is_file():
        raise _fail(_missing_message(weights_path, meta_path))
    meta = read_metadata(meta_path)
    _check_safetensors_file(weights_path)
    recorded = (meta.get("weights") or {}).get("sha256") if isinstance(meta.get("weights"), dict) else None
    if recorded and recorded != _sha256(weights_path):
        raise _fail(
            f"{weights_path.name} does not match {meta_path.name} (SHA-256 differs): the pair comes "
            "from different saves or the tensor file is damaged"
        )
    try:
        _check_network_fits(meta, meta_path, weights_path)
        model = build_model(meta["architecture"], meta["config"])
    except (TypeError, ValueError) as err:
        raise _fail(f"{meta_path.name}: cannot build the network ({err})") from None
    tensors = _read_tensors(weights_path)
    expected = model.state_dict()
    _check_state_dict(tensors, expected, weights_path.name)
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise _fail(f"{weights_path.name}: tensor {key!r} holds NaN or infinite values")
    model.load_state_dict(tensors, strict=True)
    meta.setdefault("element_size", model.config.to_dict().get("element_size"))
    meta.setdefault("flux", model.config.to_dict().get("flux"))
    if device is not None and str(device) != "cpu":  # a device the caller has resolved
        model = model.to(device)
    return model.eval(), meta


def load_extra_tensors(path: str | os.PathLike, group: str | None = None) -> dict:
    """Tensors saved with ``extra_tensors``: all of them as ``{group: {key: t}}`` / ``{key: t}``,
    or only ``group``'s ``{key: t}``. Empty dict when the checkpoint has no state file."""
    spath = state_path(path)
    if not spath.is_file():
        return {}
    flat = _read_tensors(spath)
    nested: dict = {}
    for key, tensor in flat.items():
        if "/" in key:
            g, sub = key.split("/", 1)
            nested.setdefault(g, {})[sub] = tensor
        else:
            nested[key] = tensor
    if group is not None:
        return nested.get(group, {})
    return nested
