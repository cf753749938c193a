"""OME-Zarr in and out, with nothing but ``zarr`` (no ``ome-zarr`` package needed).

Reading: an OME-NGFF image (``multiscales`` attributes, NGFF 0.4 or 0.5) gives its level 0 as a dask
array, with axes from ``multiscales[0].axes``; a bare zarr array is read as it is.

Writing: a Zarr v2 group (what NGFF 0.4 specifies, and what napari-ome-zarr, Fiji/MoBIE and
ome-zarr-py read) holding one float32 array ``0`` (chunks of one plane × 512 × 512, ``/`` chunk
keys) and a minimal ``multiscales`` block: version 0.4, one dataset, axes and a scale transform
(pixel sizes carried over from the input where known). Only level 0 is written: viewers that want a
pyramid build one. Writes go to a hidden temporary folder next to the destination, renamed into
place at the end, so an interrupted run leaves nothing at the destination (and the folder that a
killed run leaves is removed by the next write to the same destination).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import atomic_dir
from .formats import lazy_above

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")
NGFF_VERSION = "0.4"
CHUNK = 512
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_UNITS = {"µm": "micrometer", "um": "micrometer", "nm": "nanometer", "mm": "millimeter"}


def is_zarr_path(path: str | os.PathLike) -> bool:
    """A ``.zarr`` name, or a folder that holds zarr metadata."""
    path = Path(path)
    if path.name.lower().endswith(ZARR_SUFFIXES):
        return True
    return path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)


def _multiscales(attrs) -> list | None:
    attrs = dict(attrs)
    if "multiscales" in attrs:  # NGFF 0.4 (zarr v2)
        return attrs["multiscales"]
    return (attrs.get("ome") or {}).get("multiscales")  # NGFF 0.5 (zarr v3)


def _axes_letters(axes, ndim: int) -> str:
    names = [(a.get("name") if isinstance(a, dict) else str(a)) or "?" for a in axes or []]
    letters = "".join(n[:1].upper() for n in names)
    return letters if len(letters) == ndim else "".join("QQQQQQQQQQ"[: ndim - 2]) + "YX"


def read_zarr(path: str | os.PathLike, *, channel_axis: int | None = None, lazy: bool | None = None):
    """``(array, info)`` like :func:`napari_dgno.io.read_image`; the array is dask unless
    ``lazy`` is False. ``info["format"]`` is ``"ome-zarr"`` (``"zarr"`` for a bare array)."""
    import dask.array as da
    import zarr

    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise InputError(f"{path} is not a readable Zarr store ({' '.join(str(err).split())})") from None
    info: dict = {"format": "zarr", "series": 1}
    axes = None
    if isinstance(node, zarr.Group):
        multiscales = _multiscales(node.attrs)
        if not multiscales:
            raise InputError(f"{path} is a Zarr group without OME-NGFF 'multiscales' metadata")
        first = multiscales[0]
        datasets = first.get("datasets") or []
        if not datasets or datasets[0].get("path") not in node:
            raise InputError(f"{path}: multiscales[0] names no readable level 0 dataset")
        array = node[datasets[0]["path"]]
        axes = first.get("axes")
        info.update(format="ome-zarr", series=len(datasets), ngff=first.get("version"))
        scale = _scale_of(datasets[0])
        if scale is not None and axes:
            info["physical_size"] = _physical_size(axes, scale)
    else:
        array = node
    shape = tuple(int(s) for s in array.shape)
    if not shape or 0 in shape:
        raise InputError(f"{path} holds an empty image (shape {shape})")
    letters = _axes_letters(axes, len(shape))
    data = da.from_zarr(array)
    if channel_axis is not None:
        channel_axis %= len(shape)
        data = da.moveaxis(data, channel_axis, 0)
        letters = letters[channel_axis] + letters[:channel_axis] + letters[channel_axis + 1 :]
    if not lazy_above(True if lazy is None else lazy, data.nbytes):  # always lazy unless told
        try:
            data = data.compute()
        except Exception as err:
            raise InputError(f"{path} is truncated or corrupt ({' '.join(str(err).split())})") from None
    info.update(path=str(path), dtype=str(data.dtype), shape=tuple(data.shape), axes=letters)
    return data, info


def _scale_of(dataset: dict) -> list | None:
    for t in dataset.get("coordinateTransformations") or []:
        if t.get("type") == "scale":
            return list(t.get("scale") or [])
    return None


def _physical_size(axes, scale) -> dict:
    sizes = {}
    for a, s in zip(axes, scale, strict=False):
        name = (a.get("name") if isinstance(a, dict) else str(a)) or ""
        if name.upper() in ("X", "Y", "Z"):
            sizes[f"PhysicalSize{name.upper()}"] = float(s)
            unit = a.get("unit") if isinstance(a, dict) else None
            if unit:
                sizes[f"PhysicalSize{name.upper()}Unit"] = "µm" if unit == "micrometer" else unit
    return sizes


def ngff_attrs(shape: tuple[int, ...], metadata: dict | None = None, name: str = "image") -> dict:
    """The minimal NGFF 0.4 ``multiscales`` block for one level-0 array ``"0"``."""
    metadata = metadata or {}
    axes = metadata.get("axes")
    if not axes or len(axes) != len(shape):
        axes = "TCZYX"[-len(shape) :] if len(shape) <= 5 else "Q" * (len(shape) - 2) + "YX"
    sizes = metadata.get("physical_size") or {}
    entries, scale = [], []
    for letter in axes.upper():
        entry: dict = {"name": letter.lower()}
        if letter in _AXIS_TYPES:
            entry["type"] = _AXIS_TYPES[letter]
        if f"PhysicalSize{letter}" in sizes:
            scale.append(float(sizes[f"PhysicalSize{letter}"]))
            unit = str(sizes.get(f"PhysicalSize{letter}Unit", "µm"))
            entry["unit"] = _UNITS.get(unit, unit)
        else:
            scale.append(1.0)
        entries.append(entry)
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": name,
                "axes": entries,
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
                "metadata": {"written_by": "napari-dgno"},
            }
        ]
    }


def check_zarr_destination(path: str | os.PathLike) -> None:
    """Refuse to replace anything that is not a Zarr store (a user's folder, a file)."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and any((path / m).exists() for m in ZARR_MARKERS)):
        raise InputError(f"output {path} exists and is not a Zarr store; choose another -o path")
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist")


class ZarrRowWriter:
    """Takes finished rows of each plane and writes whole chunk rows to a zarr array.

    Why buffer: the engine releases rows in bands that do not line up with chunks; writing them as
    they come would decode and re-encode every chunk two or three times.
    """

    def __init__(self, array):
        self.array = array
        self.chunk_rows = int(array.chunks[-2])
        self.idx, self.y0, self.pending = None, 0, []

    def _pending_rows(self) -> int:
        return sum(len(r) for r in self.pending)

    def _write(self, upto_rows: int) -> None:
        rows = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        head, rest = rows[:upto_rows], rows[upto_rows:]
        self.array[(*self.idx, slice(self.y0, self.y0 + len(head)), slice(None))] = head
        self.y0 += len(head)
        self.pending = [rest] if len(rest) else []

    def flush(self) -> None:
        if self.pending:
            self._write(self._pending_rows())

    def write_rows(self, idx: tuple, y0: int, rows: np.ndarray) -> None:
        if idx != self.idx or y0 != self.y0 + self._pending_rows():
            self.flush()
            self.idx, self.y0 = idx, y0
        self.pending.append(np.asarray(rows, dtype=np.float32))
        end = self.y0 + self._pending_rows()
        aligned = end // self.chunk_rows * self.chunk_rows
        if end == self.array.shape[-2]:
            aligned = end
        if aligned > self.y0:
            self._write(aligned - self.y0)


@contextlib.contextmanager
def zarr_writer(path: str | os.PathLike, shape: tuple[int, ...], metadata: dict | None = None):
    """Create an OME-Zarr of float32 ``shape`` at ``path`` atomically; yields a :class:`ZarrRowWriter`."""
    import zarr

    path = Path(path)
    check_zarr_destination(path)
    chunks = (1,) * (len(shape) - 2) + tuple(min(CHUNK, int(s)) for s in shape[-2:])
    name = path.name[: -len(".zarr")] if path.name.lower().endswith(".zarr") else path.name
    with atomic_dir(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        array = group.create_array(
            "0",
            shape=tuple(int(s) for s in shape),
            chunks=chunks,
            dtype="float32",
            fill_value=0.0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        group.attrs.update(ngff_attrs(tuple(shape), metadata, name=name.removesuffix(".ome")))
        writer = ZarrRowWriter(array)
        yield writer
        writer.flush()


def write_zarr_atomic(path: str | os.PathLike, array, metadata: dict | None = None) -> Path:
    """Write a whole (numpy) image as OME-Zarr, atomically."""
    data = np.asarray(array, dtype=np.float32)
    with zarr_writer(path, data.shape, metadata) as writer:
        for idx in np.ndindex(*data.shape[:-2]):
            writer.write_rows(idx, 0, data[idx])
    return Path(path)
