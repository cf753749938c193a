"""A training run described as one dataclass, read from a YAML file in ``configs/``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml


@dataclass
class TrainConfig:
    """Everything that decides what a run does. Stored verbatim in the checkpoint's training record."""

    name: str = "dgno-small-face"
    architecture: str = "dgno"  # "dgno" or "nafnet"
    preset: str = "small"  # DGNO preset; ignored for nafnet
    model: dict = field(default_factory=dict)  # overrides of the preset (element_size, flux, width ...)
    base_checkpoint: str | None = None  # fine-tune from these weights instead of a fresh network
    data: dict = field(default_factory=lambda: {"source": "synthetic"})
    patch: int = 128
    batch_size: int = 8
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    fft_weight: float = 0.01
    ema_decay: float = 0.995
    val_every: int = 200
    val_size: int = 16
    val_patch: int = 256
    checkpoint_every: int = 100
    seed: int = 0
    # Processes that simulate batches ahead (train/workers.py). 0: the training process draws them
    # from one stream; N > 0: step k's batch is drawn from (seed, k), the same for any N.
    data_workers: int = 0
    threads: int | None = None  # CPU threads; None: $NAPARI_DGNO_THREADS, else torch's setting
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA (bf16); no effect on CPU
    output_dir: str = "runs"

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        # Unnamed runs are named after their file: never after the default model, whose run
        # folder they would otherwise share.
        return cls.from_dict({"name": Path(path).stem, **data, **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}")
        return cls(**data)

    def __post_init__(self):
        if (
            isinstance(self.data_workers, bool)
            or not isinstance(self.data_workers, int)
            or self.data_workers < 0
        ):
            raise ValueError(f"data_workers must be a whole number >= 0, got {self.data_workers!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
