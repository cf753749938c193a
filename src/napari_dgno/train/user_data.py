"""Training data and run bookkeeping for fine-tuning on the user's own data (no Qt).

Four kinds of data: a blurred + sharp pair, a z-stack whose in-focus plane is the target of the
others, folders of TIFF pairs, and sharp-only images blurred by the simulator. The fine-tune dock and
``dgno train`` (``data: {source: folder | zstack}``, see ``batches.build_source``) build them here, so
both hold out the same data. Each builder returns a source for
:class:`~napari_dgno.train.engine.Trainer` whose validation pairs come from a *held-out* part of the
data, so the PSNR curve shows what the model learnt rather than what it memorised:

* several planes/images: whole planes are held out (evenly spread, so the validation set covers the
  range of blur in a stack);
* one image: a strip of rows at the bottom is held out, and training crops never reach into it;
* a z-stack always uses the strip: its in-focus plane is the target of every pair, so holding out
  planes would still train on the validation targets.

Shapes are checked before any pixel is read (:func:`plan_holdout`), so the dock can refuse a bad
choice at once; the builders read the data and may run in a worker. A pair's sharp image in other
units than its blurred one is mapped into the blurred one's units, fitted on the whole plane before
the split (:mod:`napari_dgno.data.units`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.datasets import (
    TIFF_SUFFIXES,
    FolderPairs,
    PairDataset,
    PairedArrays,
    SimulatedPairs,
    ZStackPairs,
    fixed_validation_set,
)
from ..data.focus import find_focus_plane
from ..data.units import UnitMap, fit_unit_map
from ..errors import CheckpointError, InputError
from ..io.checkpoint import read_metadata
from ..registry import check_model_name, user_model_dir
from .batches import DatasetSource, simulation_config
from .config import TrainConfig

MIN_VALIDATION_ROWS = 16  # a thinner strip gives validation crops too small to judge deblurring
MIN_PATCH = 8  # the smallest crop a dataset accepts
RUNS_DIR_ENV = "NAPARI_DGNO_RUNS_DIR"
FRESH_PRESET = "small"  # the network "fresh small network" starts from


# --------------------------------------------------------------------------------------------------
# The validation split


@dataclass(frozen=True)
class Holdout:
    """Which part of the data is validation: whole ``planes`` or the bottom ``rows`` of one image."""

    kind: str  # "planes" or "strip"
    planes: tuple[int, ...] = ()
    rows: int = 0
    fraction: float = 0.0

    def split(self, planes: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(train, validation)`` lists of 2-D planes; no pixel is in both."""
        if self.kind == "planes":
            held = set(self.planes)
            return [p for i, p in enumerate(planes) if i not in held], [planes[i] for i in self.planes]
        return [p[: -self.rows] for p in planes], [p[-self.rows :] for p in planes]

    def split_items(self, items: list) -> tuple[list, list]:
        """``(train, validation)`` of one value per plane (a strip's plane is in both)."""
        if self.kind == "planes":
            held = set(self.planes)
            return [v for i, v in enumerate(items) if i not in held], [items[i] for i in self.planes]
        return list(items), list(items)

    def describe(self) -> dict:
        out = {"method": self.kind, "fraction": self.fraction}
        if self.kind == "planes":
            out["planes"] = list(self.planes)
        else:
            out["rows"] = f"last {self.rows} rows"
        return out


def plan_holdout(shapes, patch: int, fraction: float, name: str = "image", strip: bool = False) -> Holdout:
    """Choose the held-out part from the planes' shapes alone; refuse data too small for ``patch``.

    ``shapes``: the (Y, X) shape of every plane. Deterministic: same shapes, same split.
    """
    shapes = [tuple(int(v) for v in s[-2:]) for s in shapes]
    if not shapes:
        raise InputError(f"{name}: no images to train on")
    if not 0.0 < fraction < 1.0:
        raise InputError(f"the validation fraction must be between 0 and 1, got {fraction}")
    patch = int(patch)
    if patch < MIN_PATCH:
        raise InputError(f"the patch size must be at least {MIN_PATCH} px, got {patch}")
    n = len(shapes)
    if n >= 2 and not strip:
        n_val = min(max(1, round(n * fraction)), n - 1)
        held = tuple(sorted({int((k + 0.5) * n / n_val) for k in range(n_val)}))
        for i, (h, w) in enumerate(shapes):
            if i not in held and min(h, w) < patch:
                raise InputError(
                    f"{name}: plane {i} is {h}x{w} px, smaller than the {patch}-px training patch; "
                    "choose a smaller patch size"
                )
        return Holdout("planes", planes=held, fraction=float(fraction))
    h, w = min(s[0] for s in shapes), min(s[1] for s in shapes)
    rows = max(MIN_VALIDATION_ROWS, round(h * fraction))
    if w < patch or h - rows < patch:
        raise InputError(
            f"{name} is {h}x{w} px: after the {rows}-row validation strip, {h - rows} rows are left "
            f"for {patch}-px training patches; choose a smaller patch size or validation fraction"
        )
    return Holdout("strip", rows=rows, fraction=float(fraction))


def plane_shapes(shape, name: str = "image") -> list[tuple[int, int]]:
    """The (Y, X) of each plane of an array of ``shape`` (any leading axes)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape[-2:]) < 2:
        raise InputError(f"{name}: need images with Y and X last, got shape {shape}")
    return [shape[-2:]] * int(np.prod(shape[:-2], dtype=np.int64))


def _planes(array, name: str) -> list[np.ndarray]:
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{name}: need real-valued images, got dtype {array.dtype}")
    plane_shapes(array.shape, name)
    return list(array.reshape(-1, *array.shape[-2:]).astype(np.float32))


# --------------------------------------------------------------------------------------------------
# Sources


class PlanePairs(PairedArrays):
    """Aligned crops from lists of 2-D blurred and sharp planes (their sizes may differ)."""

    def __init__(
        self,
        blurred: list,
        sharp: list,
        patch: int = 128,
        seed: int = 0,
        augment: bool = True,
        units: list[UnitMap] | None = None,
    ):
        PairDataset.__init__(self, patch, seed, augment)
        self._set_pairs(list(blurred), list(sharp), units)


def unit_maps(blurred: list, sharp: list, names: list[str]) -> list[UnitMap]:
    """Each pair's map of the sharp plane into its blurred plane's units (whole planes)."""
    return [fit_unit_map(b, s, n) for b, s, n in zip(blurred, sharp, names, strict=True)]


def describe_units(units: list[UnitMap]) -> str:
    mapped = [u for u in units if not u.same_units]
    if not mapped:
        return "sharp and blurred in the same units"
    example = mapped[0].describe()
    return f"{len(mapped)} of {len(units)} sharp images mapped to their blurred image's units ({example})"


class HeldOutSource(DatasetSource):
    """A :class:`DatasetSource` whose validation crops fit inside the held-out part (a strip may be
    thinner than the requested validation patch; its pixels are never padded with training pixels)."""

    def validation_pairs(self, n: int, patch: int, seed: int):
        images = getattr(self.validation, "blurred", None) or self.validation.images
        side = min(min(im.shape[-2:]) for im in images)
        return fixed_validation_set(self.validation, n, seed, patch=max(MIN_PATCH, min(int(patch), side)))


def pair_source(
    blurred,
    sharp,
    *,
    patch: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    names: tuple[str, str] = ("blurred", "sharp"),
) -> HeldOutSource:
    """A blurred image (or stack) and its sharp version, pixel-aligned and of the same shape."""
    check_same_shape(np.shape(blurred), np.shape(sharp), names)
    holdout = plan_holdout(plane_shapes(np.shape(blurred), names[0]), patch, val_fraction, f"'{names[0]}'")
    planes_b, planes_s = _planes(blurred, names[0]), _planes(sharp, names[1])
    units = unit_maps(planes_b, planes_s, [f"'{names[1]}'"] * len(planes_b))
    train_b, val_b = holdout.split(planes_b)
    train_s, val_s = holdout.split(planes_s)
    train_u, val_u = holdout.split_items(units)
    info = {
        "source": "layer pair",
        "blurred": names[0],
        "sharp": names[1],
        "units": describe_units(units),
        "validation": holdout.describe(),
    }
    return HeldOutSource(
        PlanePairs(train_b, train_s, patch, seed, units=train_u),
        PlanePairs(val_b, val_s, patch, seed + 1, augment=False, units=val_u),
        info,
    )


def check_same_shape(blurred_shape, sharp_shape, names=("blurred", "sharp")) -> None:
    if tuple(blurred_shape) != tuple(sharp_shape):
        raise InputError(
            f"'{names[0]}' {tuple(blurred_shape)} and '{names[1]}' {tuple(sharp_shape)} differ in shape; "
            "pair a blurred image with the sharp image of the same field"
        )


def check_zstack(shape, focus_index: int | None = None, name: str = "stack") -> None:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[0] < 2:
        raise InputError(f"'{name}' has shape {shape}; a z-stack must be (Z, Y, X) with at least 2 planes")
    if focus_index is not None and not 0 <= focus_index < shape[0]:
        raise InputError(f"in-focus plane {focus_index} is outside '{name}' (planes 0-{shape[0] - 1})")


def zstack_source(
    stack,
    focus_index: int | None = None,
    *,
    patch: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    name: str = "stack",
) -> HeldOutSource:
    """BBBC006-style pairs from one (Z, Y, X) stack: the in-focus plane (detected when None) is the
    target of every other plane; validation is a bottom strip of every plane."""
    check_zstack(np.shape(stack), focus_index, name)
    holdout = plan_holdout([np.shape(stack)[1:]], patch, val_fraction, f"'{name}'", strip=True)
    stack = np.asarray(stack)
    detected = focus_index is None
    if detected:
        focus_index = find_focus_plane(stack)
    rows = holdout.rows
    info = {
        "source": "z-stack",
        "stack": name,
        "focus_index": int(focus_index),
        "focus": "detected (sharpest plane)" if detected else "chosen",
        "validation": holdout.describe(),
    }
    return HeldOutSource(
        ZStackPairs(stack[:, :-rows], focus_index, patch, seed),
        ZStackPairs(stack[:, -rows:], focus_index, patch, seed + 1, augment=False),
        info,
    )


def folder_pair_names(blurred_dir, sharp_dir) -> list[str]:
    """Names of the TIFFs found in both folders (cheap: lists the folders, reads no image)."""
    if not blurred_dir or not sharp_dir:
        raise InputError("choose a folder of blurred TIFFs and a folder of their sharp versions")
    names = []
    for folder in (Path(blurred_dir), Path(sharp_dir)):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder")
        names.append({p.stem for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES})
    common = sorted(names[0] & names[1])
    if not common:
        raise InputError(
            f"no TIFF files with the same name in {blurred_dir} and {sharp_dir} "
            f"({len(names[0])} and {len(names[1])} TIFFs found)"
        )
    return common


def folder_source(
    blurred_dir, sharp_dir, *, patch: int, seed: int = 0, val_fraction: float = 0.2
) -> HeldOutSource:
    """TIFF pairs with the same name in two folders; whole images are held out when there are several."""
    names = folder_pair_names(blurred_dir, sharp_dir)
    pairs = FolderPairs(blurred_dir, sharp_dir, patch, seed)
    holdout = plan_holdout([p.shape for p in pairs.blurred], patch, val_fraction, str(blurred_dir))
    train_b, val_b = holdout.split(pairs.blurred)
    train_s, val_s = holdout.split(pairs.sharp)
    train_u, val_u = holdout.split_items(pairs.units)
    info = {
        "source": "folder pairs",
        "blurred_dir": str(blurred_dir),
        "sharp_dir": str(sharp_dir),
        "files": names,
        "units": describe_units(pairs.units),
        "validation": holdout.describe(),
    }
    return HeldOutSource(
        PlanePairs(train_b, train_s, patch, seed, units=train_u),
        PlanePairs(val_b, val_s, patch, seed + 1, augment=False, units=val_u),
        info,
    )


def simulated_source(
    clean_images,
    *,
    patch: int,
    seed: int = 0,
    val_fraction: float = 0.2,
    max_defocus_um: float = 20.0,
    names=None,
) -> HeldOutSource:
    """Sharp-only images (a list of 2-D images or stacks) blurred by the simulator, fresh every step."""
    names = list(names or [f"image {i}" for i in range(len(clean_images))])
    pairs = list(zip(clean_images, names, strict=True))
    shapes = [s for image, n in pairs for s in plane_shapes(np.shape(image), f"'{n}'")]
    holdout = plan_holdout(shapes, patch, val_fraction, f"'{names[0]}'")
    planes = [p for image, n in pairs for p in _planes(image, n)]
    train, val = holdout.split(planes)
    sim = simulation_config({"max_defocus_um": max_defocus_um})
    info = {
        "source": "simulated blur of sharp layers",
        "layers": names,
        "max_defocus_um": float(max_defocus_um),
        "simulator": "scalar pupil defocus PSF, scatter synthesis, Poisson-Gaussian 12-bit camera",
        "validation": holdout.describe(),
    }
    return HeldOutSource(
        SimulatedPairs(train, patch, sim, seed=seed),
        SimulatedPairs(val, patch, sim, seed=seed + 1, augment=False),
        info,
    )


# --------------------------------------------------------------------------------------------------
# Runs and saving


def runs_dir() -> Path:
    """Where fine-tuning runs keep their checkpoints: ``$NAPARI_DGNO_RUNS_DIR``, else ``runs`` next
    to the user model folder (the platform data folder, or beside ``$NAPARI_DGNO_MODEL_DIR``)."""

    env = os.environ.get(RUNS_DIR_ENV)
    return Path(env).expanduser() if env else user_model_dir().parent / "runs"


def default_run_name(base: str | None, when: _dt.datetime | None = None) -> str:
    """``finetune-<base>-<YYYYmmdd-HHMM>`` (``fresh`` without a base model)."""
    when = when or _dt.datetime.now()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base or "fresh").strip("-.") or "model"
    return f"finetune-{slug}-{when:%Y%m%d-%H%M}"


def unique_run_name(name: str, folder: Path) -> str:
    """``name``, or ``name-2``, ``name-3`` … if a run of that name already exists in ``folder``."""
    candidate, k = name, 1
    while (Path(folder) / candidate).exists():
        k += 1
        candidate = f"{name}-{k}"
    return candidate


def finetune_config(
    name: str,
    *,
    base_checkpoint: str | None,
    steps: int,
    patch: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: str = "auto",
    output_dir: str | os.PathLike | None = None,
    preset: str = FRESH_PRESET,
    data: dict | None = None,
    **overrides,
) -> TrainConfig:
    """A :class:`TrainConfig` for fine-tuning in the dock: ~10 validations per run (a point on the
    PSNR curve each time) and a checkpoint at least every 100 steps (a crash loses at most a tenth
    of the run, and at most 100 steps)."""
    steps = int(steps)
    every = max(1, steps // 10)
    values = {
        "name": check_model_name(name),
        "architecture": "dgno",
        "preset": preset,
        "base_checkpoint": str(base_checkpoint) if base_checkpoint else None,
        "data": data or {"source": "napari"},
        "patch": int(patch),
        "batch_size": int(batch_size),
        "steps": steps,
        "lr": float(lr),
        "warmup_steps": min(50, max(1, steps // 20)),
        "val_every": every,
        "val_size": 8,
        "val_patch": max(128, int(patch)),
        "checkpoint_every": min(every, 100),
        "seed": int(seed),
        "device": device,
        "output_dir": str(output_dir if output_dir is not None else runs_dir()),
        **overrides,
    }
    return TrainConfig.from_dict(values)


def exported_steps(stem) -> int | None:
    """Steps trained into a run's exported model (``stem.json``), or None if there is none yet."""

    try:
        return int(read_metadata(stem)["training"]["steps"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
