"""Architecture configs as small dataclasses, and the named presets.

A config is everything needed to rebuild a network; it is stored verbatim in a checkpoint's JSON, so
fields only ever get added with defaults that reproduce the old behaviour.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

FLUX_VARIANTS = ("face", "p0dg", "none")
FLUX_MODES = ("jump", "central")
BLOCK_KINDS = ("scan", "conv")

# Generous bounds on the sizes a config may claim (the presets use width <= 48, <= 6 blocks a level,
# 4 levels). Why bound them at all: a checkpoint's JSON is read before anything else, and a number
# like 10000 blocks or width 10**9 would otherwise be built (seconds to minutes, or all memory)
# before its tensors could show that it is wrong.
MAX_CHANNELS = 256
MAX_WIDTH = 4096
MAX_LEVELS = 8
MAX_BLOCKS = 256  # per level (encoder blocks, decoder layers, middle blocks)
MAX_D_STATE = 1024
MAX_EXPAND = 64.0
MAX_WINDOW = 4096  # pixels
RESAMPLE_MODES = ("shuffle", "bilinear")


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def _check_counts(name: str, values, high: int = MAX_BLOCKS) -> None:
    for i, value in enumerate(values):
        _check_int(f"{name}[{i}]", value, 0, high)


def _check_real(name: str, value, low: float, high: float) -> None:
    """``low < value <= high``, a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low < value <= high:
        raise ValueError(f"{name} must be above {low:g} and at most {high:g}, got {value}")


@dataclass(frozen=True)
class DGNOConfig:
    """DGNO: a 4-level U-Net whose encoder scans and whose decoder is made of DG operator layers.

    ``element_size`` is the side of one element in *full-resolution pixels*; the same element grid is
    used at every decoder level (an element of E pixels is E / 2**level tokens at level ``level``), so
    the flux, the kernels and the overlays all refer to one partition of the image. 0 means a single
    element over the whole (padded) image: the global Galerkin neural operator (SRNO-like).

    ``scan_window`` and ``pool_window`` (pixels) bound what the scan blocks and the NAF blocks' channel
    attention see; with the elements they put a bounded neighbourhood behind every output pixel, so
    an image restored whole or in grid-aligned tiles gives the same result. ``upsample`` and
    ``score_gate`` are explained in ``blocks.Upsample`` and ``encoder``. Their defaults (0, 0,
    "shuffle", False) rebuild the networks saved before they existed.
    """

    in_channels: int = 1
    width: int = 48
    enc_blocks: tuple[int, ...] = (2, 4, 6, 2)
    enc_kinds: tuple[str, ...] = ("scan", "scan", "scan", "scan")
    dec_layers: tuple[int, ...] = (2, 2, 2)  # DG layers at full, 1/2 and 1/4 resolution
    heads: int = 16
    element_size: int = 8
    flux: str = "face"
    flux_mode: str = "jump"
    tau_init: float = 0.25
    d_state: int = 8
    ssm_expand: float = 1.0
    ffn_expand: float = 2.0
    scan_window: int = 0
    pool_window: int = 0
    upsample: str = "shuffle"
    score_gate: bool = False

    def __post_init__(self) -> None:
        self._check_sizes()
        levels = len(self.enc_blocks)
        if len(self.enc_kinds) != levels:
            raise ValueError("enc_kinds needs one entry per encoder level")
        if any(k not in BLOCK_KINDS for k in self.enc_kinds):
            raise ValueError(f"encoder block kinds must be among {BLOCK_KINDS}")
        if len(self.dec_layers) != levels - 1:
            raise ValueError("dec_layers needs one entry per decoder level (levels - 1)")
        if self.flux not in FLUX_VARIANTS:
            raise ValueError(f"flux must be one of {FLUX_VARIANTS}, got {self.flux!r}")
        if self.flux_mode not in FLUX_MODES:
            raise ValueError(f"flux_mode must be one of {FLUX_MODES}, got {self.flux_mode!r}")
        for level in range(levels - 1):
            if (self.width << level) % self.heads:
                raise ValueError(f"width {self.width << level} at level {level} not divisible by heads")
        check_element_size(self.element_size, levels - 1)
        check_window("scan_window", self.scan_window, levels)
        check_window("pool_window", self.pool_window, levels)
        _check_choice("upsample", self.upsample, RESAMPLE_MODES)
        if not isinstance(self.score_gate, bool):
            raise ValueError(f"score_gate must be true or false, got {self.score_gate!r}")

    def _check_sizes(self) -> None:
        """Types and generous bounds of every size, before anything is derived from them."""
        _check_int("in_channels", self.in_channels, 1, MAX_CHANNELS)
        _check_int("width", self.width, 1, MAX_WIDTH)
        for name in ("enc_blocks", "enc_kinds", "dec_layers"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise ValueError(f"{name} must be a list, got {getattr(self, name)!r}")
        _check_int("number of encoder levels", len(self.enc_blocks), 2, MAX_LEVELS)
        _check_counts("enc_blocks", self.enc_blocks)
        _check_counts("dec_layers", self.dec_layers)
        _check_int("heads", self.heads, 1, self.width)
        _check_int("d_state", self.d_state, 1, MAX_D_STATE)
        _check_real("ssm_expand", self.ssm_expand, 0.0, MAX_EXPAND)
        _check_real("ffn_expand", self.ffn_expand, 0.0, MAX_EXPAND)
        _check_real("tau_init", self.tau_init, -math.inf, math.inf)

    def block_count(self) -> int:
        """Encoder blocks plus decoder layers: each holds at least one parameter tensor."""
        return sum(self.enc_blocks) + sum(self.dec_layers)

    def min_values(self) -> int:
        """A lower bound on the network's parameter count, from the biggest weight matrices of each
        block alone: cheap to compute, so a checkpoint is sized before anything is built."""
        total = 0
        for level, (kind, n) in enumerate(zip(self.enc_kinds, self.enc_blocks, strict=True)):
            c = self.width << level
            ffn = 3 * c * int(c * self.ffn_expand)  # GatedFFN: project_in + project_out
            block = 4 * c * c if kind == "conv" else ffn + 2 * c * int(c * self.ssm_expand)
            total += n * block
        for level, n in enumerate(self.dec_layers):
            c = self.width << level
            total += n * (4 * c * c + 3 * c * int(c * self.ffn_expand))  # qkv + proj, FFN
        return total

    @property
    def levels(self) -> int:
        return len(self.enc_blocks)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> DGNOConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DGNO config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def replace(self, **changes) -> DGNOConfig:
        return replace(self, **changes)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_window(name: str, window, levels: int) -> None:
    """A window must be whole tokens at the coarsest level (or 0 for the whole image)."""
    step = 1 << (levels - 1)
    _check_int(name, window, 0, MAX_WINDOW)
    if window % step:
        raise ValueError(f"{name} must be a multiple of {step} pixels (or 0 = the whole image)")


def check_element_size(element_size: int, dg_levels: int = 3) -> None:
    """Elements must be whole token blocks at every DG level (or 0 for one global element)."""
    step = 1 << (dg_levels - 1)
    if not isinstance(element_size, int) or element_size < 0:
        raise ValueError(f"element size must be a non-negative integer, got {element_size!r}")
    if element_size and element_size % step:
        raise ValueError(f"element size must be a multiple of {step} pixels (or 0 = one element)")


@dataclass(frozen=True)
class NAFNetConfig:
    """A NAFNet-style CNN baseline (simple gates, channel attention, no activations)."""

    in_channels: int = 1
    width: int = 16
    enc_blocks: tuple[int, ...] = (1, 1, 2)
    middle_blocks: int = 2
    dec_blocks: tuple[int, ...] = (1, 1, 1)
    pool_window: int = 0  # pixels; 0 pools the whole image (NAFNet's own choice)
    upsample: str = "shuffle"

    def __post_init__(self) -> None:
        _check_int("in_channels", self.in_channels, 1, MAX_CHANNELS)
        _check_int("width", self.width, 1, MAX_WIDTH)
        for name in ("enc_blocks", "dec_blocks"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise ValueError(f"{name} must be a list, got {getattr(self, name)!r}")
        _check_int("number of encoder levels", len(self.enc_blocks), 1, MAX_LEVELS)
        if len(self.dec_blocks) != len(self.enc_blocks):
            raise ValueError("dec_blocks needs one entry per encoder level")
        _check_counts("enc_blocks", self.enc_blocks)
        _check_int("middle_blocks", self.middle_blocks, 0, MAX_BLOCKS)
        _check_counts("dec_blocks", self.dec_blocks)
        check_window("pool_window", self.pool_window, 1)
        _check_choice("upsample", self.upsample, RESAMPLE_MODES)

    def block_count(self) -> int:
        """NAF blocks in all: each holds at least one parameter tensor."""
        return sum(self.enc_blocks) + self.middle_blocks + sum(self.dec_blocks)

    def min_values(self) -> int:
        """A lower bound on the parameter count: each NAF block's two C -> 2C convolutions."""
        levels = len(self.enc_blocks)
        per_level = [e + d for e, d in zip(self.enc_blocks, self.dec_blocks, strict=True)]
        total = sum(n * 4 * (self.width << i) ** 2 for i, n in enumerate(per_level))
        return total + self.middle_blocks * 4 * (self.width << levels) ** 2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> NAFNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown NAFNet config keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# Every preset sees a bounded neighbourhood (64-px scan and pooling windows), upsamples without
# sub-pixel phases and learns its sort score: see DGNOConfig. Saved checkpoints carry their full config,
# so changing a preset never changes a model that was trained with an older one.
_BOUNDED = {"scan_window": 64, "pool_window": 64, "upsample": "bilinear", "score_gate": True}

PRESETS: dict[str, DGNOConfig] = {
    # The reference scale: width 48, encoder [2, 4, 6, 2] scan blocks, 2 DG layers per decoder level.
    # ssm_expand 2 and a wider FFN bring it to ~13 M parameters, the reference code's scale.
    "paper": DGNOConfig(ssm_expand=2.0, ffn_expand=4.0, **_BOUNDED),
    # Sized for 2-core CPUs, where full-resolution tensors cost memory bandwidth, not arithmetic:
    # conv blocks down to 1/4, the scan at 1/8 where tokens are few, DG layers at 1/2 and 1/4 (measured
    # by scripts/profile_model.py: a DG layer at full resolution cost half the training step).
    "small": DGNOConfig(
        width=16,
        enc_blocks=(1, 1, 2, 2),
        enc_kinds=("conv", "conv", "conv", "scan"),
        dec_layers=(0, 1, 1),
        heads=4,
        element_size=16,
        **_BOUNDED,
    ),
    # For tests only: runs in milliseconds.
    "tiny": DGNOConfig(
        width=8,
        enc_blocks=(1, 1, 1, 1),
        enc_kinds=("conv", "scan", "scan", "scan"),
        dec_layers=(1, 1, 1),
        heads=2,
        element_size=8,
        d_state=4,
        **{**_BOUNDED, "scan_window": 16, "pool_window": 16},
    ),
}


def preset_config(name: str, **overrides) -> DGNOConfig:
    """The named preset, with any field replaced (``element_size=32, flux="p0dg"``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
