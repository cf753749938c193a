"""Files in and out: safetensors + JSON checkpoints, TIFF / OME-TIFF images (atomic writes, clear errors)."""

from .checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    atomic_path,
    checkpoint_paths,
    load_checkpoint,
    load_extra_tensors,
    read_metadata,
    save_checkpoint,
)
from .tiff import read_image, write_tiff_atomic

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_path",
    "checkpoint_paths",
    "load_checkpoint",
    "load_extra_tensors",
    "read_image",
    "read_metadata",
    "save_checkpoint",
    "write_tiff_atomic",
]
