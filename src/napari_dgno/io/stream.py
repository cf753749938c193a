"""Open an image file for writing row band by row band: the one place that picks the format by name.

Used by :func:`napari_dgno.inference.engine.deblur_to` and the ``dgno`` command. Every writer is a
context manager yielding an object with ``write_rows(plane index, first row, rows)``; the file
appears at its destination only when the ``with`` block ends without an exception.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .ome_zarr import ZARR_SUFFIXES, write_zarr_atomic, zarr_writer
from .tiff import tiff_writer, write_tiff_atomic

TIFF_SUFFIXES = (".tif", ".tiff")


def output_format(path: str | os.PathLike) -> str:
    """``"tiff"`` or ``"zarr"`` from the file name, or InputError."""
    name = Path(path).name.lower()
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    raise InputError(f"output {path} must end in .tif, .tiff, .ome.tif, .zarr or .ome.zarr")


def open_image_writer(path: str | os.PathLike, shape: tuple[int, ...], metadata: dict | None = None):
    """A context manager writing a float32 image of ``shape`` to ``path`` (TIFF or OME-Zarr)."""
    if output_format(path) == "zarr":
        return zarr_writer(path, shape, metadata)
    return tiff_writer(path, shape, metadata)


def write_image_atomic(path: str | os.PathLike, array, metadata: dict | None = None) -> Path:
    """Write a whole in-memory image to a TIFF or OME-Zarr path, atomically."""

    if output_format(path) == "zarr":
        return write_zarr_atomic(path, array, metadata)
    return write_tiff_atomic(path, array, metadata)
