"""Files in and out: safetensors + JSON checkpoints, TIFF / OME-TIFF / OME-Zarr images (atomic writes,
clear errors, row-band writers for images larger than memory).

The checkpoint names are imported on first use: they need torch and the model, and reading or
writing an image should not pay for that (nor should ``dgno deblur`` deciding what its inputs are).
"""

import importlib

from .atomic import atomic_path
from .ome_zarr import is_zarr_path, read_zarr, write_zarr_atomic
from .stream import open_image_writer, output_format, write_image_atomic
from .tiff import open_image, read_image, write_tiff_atomic

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_path",
    "checkpoint_paths",
    "is_zarr_path",
    "load_checkpoint",
    "load_extra_tensors",
    "open_image",
    "open_image_writer",
    "output_format",
    "read_image",
    "read_metadata",
    "read_zarr",
    "save_checkpoint",
    "write_image_atomic",
    "write_tiff_atomic",
    "write_zarr_atomic",
]

_CHECKPOINT = {
    "FORMAT",
    "FORMAT_VERSION",
    "checkpoint_paths",
    "load_checkpoint",
    "load_extra_tensors",
    "read_metadata",
    "save_checkpoint",
}


def __getattr__(name):
    if name in _CHECKPOINT:
        return getattr(importlib.import_module(".checkpoint", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
