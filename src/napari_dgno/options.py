"""How a deblur runs (``DeblurOptions``) and what it did (``DeblurReport``): one type each, handed from
the CLI, the widgets and batch runs to the engine and back, instead of a dozen keywords and a dict.

Why frozen: an options object is built once per call (from CLI flags, a dock's controls or keyword
arguments) and then only read, often on another thread or a dask worker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


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
        ``self_ensemble`` appears only when on, so outputs made before it existed still count."""
        key = {
            "element_size": self.element_size,
            "flux": self.flux,
            "tile": self.tile,
            "overlap": self.overlap,
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
