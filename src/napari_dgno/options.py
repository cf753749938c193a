"""How a deblur runs (``DeblurOptions``) and what it did (``DeblurReport``): one type each, handed from
the CLI, the widgets and batch runs to the engine and back, instead of a dozen keywords and a dict.

Why frozen: an options object is built once per call (from CLI flags, a dock's controls or keyword
arguments) and then only read, often on another thread or a dask worker.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, fields, replace

from .errors import InputError

# Bounds of the numeric options, each with the reason a user sees when a value is outside them.
MAX_ELEMENT = 512  # px; the widget's cap too: larger elements only add padding and memory
MIN_TILE, MAX_TILE = 16, 8192  # px; a tile is held whole in memory: 8192² already needs tens of GB
MAX_THREADS = 1024  # a sanity bound; the engine also refuses more threads than the machine has cores
NORMALIZE_MODES = ("plane", "stack")


def _whole(name: str, value, low: int, high: int, unit: str, reason: str) -> int:
    """``value`` as an int in ``[low, high]``, or an InputError that says why the bound exists."""
    whole = isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer()
    if not whole:
        raise InputError(f"{name} must be a whole number of {unit}, got {value!r}")
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be between {low} and {high} {unit}, got {int(value)}: {reason}")
    return int(value)


@dataclass(frozen=True)
class DeblurOptions:
    """Everything about a run except the image and the model (see :func:`napari_dgno.deblur`)."""

    element_size: int | None = None  # DGNO elements in px; None: the checkpoint's
    flux: str | None = None  # face / p0dg / none; None: the checkpoint's
    device: str = "auto"
    tile: int | str = "auto"
    overlap: int | str = "auto"
    threads: int | None = None  # CPU threads; None: $NAPARI_DGNO_THREADS or torch's setting
    mixed_precision: bool = True  # bf16 autocast on GPU; never on CPU
    self_ensemble: bool = False  # average the 8 rotations / mirror images of every tile
    normalize: str = "plane"  # percentiles fitted per 2-D plane, or once over the whole stack

    def __post_init__(self) -> None:
        """Every bound that does not need the image, checked when the options are made: before
        any model is loaded or any pixel read (the engine adds the image's own bounds)."""
        set_ = object.__setattr__  # frozen: normalise the values once, here
        if self.element_size is not None:
            set_(self, "element_size", _whole(
                "element size", self.element_size, 0, MAX_ELEMENT, "px",
                "0 is one element over the whole image; larger elements only add padding and memory",
            ))  # fmt: skip
        if self.tile != "auto" and self.tile is not None:
            set_(self, "tile", _whole(
                "tile", self.tile, MIN_TILE, MAX_TILE, "px (or 'auto')",
                "a tile must be at least twice the smallest image side, and is held whole in memory",
            ))  # fmt: skip
        if self.overlap != "auto" and self.overlap is not None:
            high = self.tile - 1 if isinstance(self.tile, int) else MAX_TILE - 1
            set_(self, "overlap", _whole(
                "overlap", self.overlap, 0, high, "px (or 'auto')",
                "the overlap must be smaller than the tile it belongs to",
            ))  # fmt: skip
        if self.threads is not None:
            set_(self, "threads", _whole(
                "threads", self.threads, 1, MAX_THREADS, "threads",
                "at least one thread must run the network (and more than the cores only slow it)",
            ))  # fmt: skip
        if self.normalize not in NORMALIZE_MODES:
            raise InputError(
                f"normalize must be 'plane' (percentiles per 2-D plane) or 'stack' (one fit over the "
                f"whole input), got {self.normalize!r}"
            )

    def check_image(self, plane_shape: tuple[int, int]) -> None:
        """The bounds that need the image (or the machine), checked before any model is loaded or
        pixel read: an element larger than the image would only pad it; threads beyond the cores
        only slow the run down."""
        e = self.element_size
        if e is not None and e > max(*plane_shape, 4):
            raise InputError(
                f"element size {e} px is larger than the image ({plane_shape[0]}x{plane_shape[1]} px): "
                "it would only pad the image; use 0 for one element over the whole image"
            )
        cores = os.cpu_count() or 1
        if self.threads is not None and self.threads > cores:
            raise InputError(
                f"threads ({self.threads}) must not exceed this machine's {cores} cores: more threads "
                "than cores only slow the run down"
            )

    def replace(self, **changes) -> DeblurOptions:
        return replace(self, **changes)

    def overridden(self, **keywords) -> DeblurOptions:
        """These options with every keyword that differs from its default applied on top: how the
        public functions combine an ``options`` object with explicit keyword arguments."""
        defaults = {f.name: f.default for f in fields(self)}
        changes = {k: v for k, v in keywords.items() if v != defaults[k]}
        return replace(self, **changes) if changes else self

    def fingerprint(self) -> dict:
        """What changes the restored values, for deciding whether an existing output is this run's.
        Threads, device and precision change speed (and rounding), not the result a user asked for;
        ``self_ensemble`` appears only when on, so outputs made before it existed still count.
        ``normalize`` is always there: stacks made before per-plane normalisation differ from now."""
        key = {
            "element_size": self.element_size,
            "flux": self.flux,
            "tile": self.tile,
            "overlap": self.overlap,
            "normalize": self.normalize,
        }
        if self.self_ensemble:
            key["self_ensemble"] = True
        return key

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DeblurReport:
    """What a deblur did: the model and options it resolved, the tiling, the time."""

    model: str
    model_path: str | None
    element_size: int | None
    flux: str | None
    device: str
    tile: int
    overlap: int
    self_ensemble: bool
    tiles_per_plane: int
    planes: int
    normalization: dict
    constant: bool  # a constant image comes back unchanged, without the network
    rows_read: int  # the most rows of one plane held at once, read and blended
    rows_blended: int
    seconds: float
    streamed: bool
    output: str | None = None
    shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        if out["output"] is None:
            del out["output"]
        if out["shape"] is None:
            del out["shape"]
        return out
