"""Which models exist and how a model argument becomes a loaded network, in one place.

Shipped checkpoints live in ``napari_dgno/weights``, the user's own (fine-tuned) ones in
``$NAPARI_DGNO_MODEL_DIR`` or the platform data folder. Every public entry point takes a ``model``
argument that may be None (the shipped default), a name, a checkpoint path, a loaded
:class:`DeblurModel` or a torch module; :func:`resolve_model` turns any of them into a
``DeblurModel`` on a resolved device, once per call. The engine, the widgets, batch runs and the CLI
all go through it (timm's ``_registry`` / ``_factory`` split, in one small module).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .devices import resolve_device
from .errors import CheckpointError, InputError
from .io import catalog
from .io.checkpoint import (
    META_SUFFIX,
    PICKLE_SUFFIXES,
    WEIGHTS_SUFFIX,
    checkpoint_paths,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)

MODEL_DIR_ENV = catalog.MODEL_DIR_ENV
SHIPPED_INDEX = catalog.SHIPPED_INDEX


# ---------------------------------------------------------------------------------------------------
# Where models live (the listing itself is torch-free, in io/catalog.py; here it is validated fully)


def shipped_model_dir() -> Path:
    """Checkpoints that ship inside the package (``napari_dgno/weights``)."""
    return catalog.shipped_model_dir()


def user_model_dir() -> Path:
    """The user's own (fine-tuned) models: ``$NAPARI_DGNO_MODEL_DIR`` or the platform data folder."""
    return catalog.user_model_dir()


def _shipped_index() -> dict:
    try:
        return catalog.shipped_index(shipped_model_dir())
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def _checkpoints_in(folder: Path) -> list[Path]:
    return catalog.checkpoints_in(folder)


def _entry(path: Path, source: str) -> dict:
    return catalog.entry(path, source, read_metadata)


def list_models() -> list[dict]:
    """Shipped, then user models, from their JSON only (no tensors read).

    Each entry: ``name, source ("shipped"/"user"), path, architecture, preset, flux, element_size,
    params, metrics``; an unreadable checkpoint is listed with an ``error`` instead.
    """
    shipped = catalog.shipped_entries(shipped_model_dir(), read_metadata, _shipped_index())
    return shipped + [_entry(p, "user") for p in _checkpoints_in(user_model_dir())]


def default_model_name(flux: str | None = None, *, shipped=None, index=None) -> str | None:
    """The shipped default (``models.json``'s ``default``, else the first shipped model); with
    ``flux``, the default if it was trained with that flux, else the first shipped model that was.
    None when nothing suitable ships."""
    index = _shipped_index() if index is None else index
    if shipped is None:
        shipped = catalog.shipped_entries(shipped_model_dir(), read_metadata, index)
    return catalog.pick_default(shipped, index, flux)


def check_default_flux(flux: str | None) -> None:
    """Refuse to run the implied default model with a flux it was not trained with.

    Why: ``dgno deblur --flux none`` used to swap in another model silently (only the summary line
    said so). Now the user names the model: the error lists the models trained with that flux, and
    naming the default runs it with the other flux, as any model can be (the flux is a run-time
    option)."""
    if flux is None:
        return
    models = [e for e in list_models() if "error" not in e]
    default = next((e for e in models if e.get("default")), None)
    if default is None or default.get("flux") in (None, flux):
        return
    with_flux = [e["name"] for e in models if e.get("flux") == flux]
    listed = (
        f"models trained with it: {', '.join(with_flux)}"
        if with_flux
        else "no installed model was trained with it"
    )
    raise InputError(
        f"the default model {default['name']} was trained with flux {default['flux']}, not {flux} "
        f"({listed}); name the model (--model NAME, or model=NAME in Python), e.g. "
        f"{with_flux[0] if with_flux else default['name']}"
    )


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.endswith((WEIGHTS_SUFFIX, META_SUFFIX, *PICKLE_SUFFIXES))
        or text.startswith(("~", "."))
    )


def find_model(name: str) -> Path:
    """The JSON path of a model called ``name``: shipped first, then the user's folder."""
    for source, folder in (("shipped", shipped_model_dir()), ("user", user_model_dir())):
        for path in _checkpoints_in(folder):
            stem = path.name[: -len(META_SUFFIX)]
            if stem == name:
                return path
            entry = _entry(path, source)
            if entry.get("name") == name:
                return path
    shipped = [e["name"] for e in list_models() if e["source"] == "shipped"]
    if not shipped:
        raise CheckpointError(
            f"no shipped model named {name!r} (no models ship with this install yet, and none in "
            f"{user_model_dir()}); pass a checkpoint path instead"
        )
    user = [e["name"] for e in list_models() if e["source"] == "user"]
    known = ", ".join(shipped + user)
    raise CheckpointError(f"no model named {name!r} (known: {known}); see `dgno models`")


@dataclass
class DeblurModel:
    """A loaded network plus its checkpoint metadata and the device it lives on."""

    net: nn.Module
    meta: dict = field(default_factory=dict)
    name: str = "unnamed"
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def architecture(self) -> str:
        return self.meta.get("architecture", "dgno")

    @property
    def element_size(self) -> int | None:
        config = getattr(self.net, "config", None)
        return self.meta.get("element_size", getattr(config, "element_size", None))

    @property
    def flux(self) -> str | None:
        config = getattr(self.net, "config", None)
        return self.meta.get("flux", getattr(config, "flux", None))

    def to(self, device) -> DeblurModel:
        """Move the network (in place) to ``device``; returns self."""
        self.device = resolve_device(device)
        self.net.to(self.device)
        return self


def locate_model(name_or_path) -> Path:
    """The checkpoint a model argument refers to (see :func:`load_model`)."""
    if name_or_path is None:
        name = default_model_name()
        if name is None:
            raise CheckpointError(
                f"no shipped model found in {shipped_model_dir()}; pass a checkpoint with --model PATH"
            )
        return find_model(name)
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(str(name_or_path)):
        return Path(name_or_path).expanduser()
    meta_path = checkpoint_paths(name_or_path)[1]
    return meta_path if meta_path.is_file() else find_model(str(name_or_path))


def _wrap(net: nn.Module, meta: dict, path: Path, device: torch.device) -> DeblurModel:
    weights, meta_path = checkpoint_paths(path)
    name = meta.get("name") or meta_path.name[: -len(META_SUFFIX)]
    return DeblurModel(net=net, meta=dict(meta), name=name, path=weights, device=device)


def load_model(name_or_path=None, device="auto") -> DeblurModel:
    """``None``: the shipped default; a name: shipped, then user models; a path: that checkpoint.

    Every call builds a fresh network (safe to fine-tune or move).
    """
    path, target = locate_model(name_or_path), resolve_device(device)
    net, meta = load_checkpoint(path, device=target)
    return _wrap(net, meta, path, target)


def _load_model_cached(name_or_path, device) -> DeblurModel:
    """For ``deblur(model="name")``: the network stays private to the engine, so it can be reused."""
    path, target = locate_model(name_or_path), resolve_device(device)
    net, meta = _load_cached(*_cache_key(path), str(target))
    return _wrap(net, meta, path, target)


def _cache_key(path: Path) -> tuple:
    key = []
    for file in checkpoint_paths(path):
        try:
            stat = file.stat()
            key += [str(file.resolve()), stat.st_mtime_ns, stat.st_size]
        except OSError:
            key += [str(file), 0, 0]  # load_checkpoint reports the missing file
    return tuple(key)


@functools.lru_cache(maxsize=2)
def _load_cached(weights: str, w_mtime: int, w_size: int, meta: str, m_mtime: int, m_size: int, device: str):
    """Reloading a checkpoint per call would cost ~50 ms each time a widget runs; keep the last two."""
    return load_checkpoint(weights, device=device)


def resolve_model(model, device="auto") -> DeblurModel:
    """Any ``model`` argument as a loaded :class:`DeblurModel` on ``device`` ("auto" keeps a loaded
    model where it is). Names and paths load through a small cache, so widgets can run repeatedly."""
    if isinstance(model, DeblurModel):
        if device not in (None, "auto") and resolve_device(device) != model.device:
            model.to(device)
        return model
    if isinstance(model, nn.Module):
        params = next(iter(model.parameters()), None)
        current = params.device if params is not None else torch.device("cpu")
        if device not in (None, "auto"):
            target = resolve_device(device)
            if target != current:
                model.to(target)
            current = target
        return DeblurModel(net=model, meta={}, name=type(model).__name__, device=current)
    if model is None or isinstance(model, (str, os.PathLike)):
        return _load_model_cached(model, device)
    raise InputError(
        f"model must be a name, a path, a DeblurModel or a torch module, got {type(model).__name__}"
    )


# ---------------------------------------------------------------------------------------------------
# The user's own models

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_model_name(name: str) -> str:
    """A model name is a file name: letters, digits, ``.``, ``_``, ``-`` (so the CLI can use it too)."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise InputError(
            f"{name!r} cannot be a model name: use letters, digits, '.', '_' and '-' (start with a "
            "letter or digit, at most 100 characters)"
        )
    return name


def user_model_exists(name: str) -> bool:
    return (user_model_dir() / f"{name}.json").exists()


def save_user_model(stem, name: str, overwrite: bool = False) -> Path:
    """Save a run's exported model (``stem.safetensors`` + ``.json``) as the user model ``name``.

    Re-saved through :func:`save_checkpoint` (atomic, fresh hashes and name), so ``list_models()``,
    the Deblur dock and ``dgno deblur --model NAME`` find it at once. Returns the JSON path.
    """
    name = check_model_name(name)
    if any(e["source"] == "shipped" and e["name"] == name for e in list_models()):
        raise InputError(f"{name!r} is the name of a shipped model; choose another name")
    if user_model_exists(name) and not overwrite:
        raise InputError(f"a model named {name!r} already exists in {user_model_dir()}")
    model, meta = load_checkpoint(stem)
    meta = {k: v for k, v in meta.items() if k != "created"}
    meta["name"] = name
    meta["run"] = str(Path(stem).parent)
    return save_checkpoint(user_model_dir() / name, model, meta)
