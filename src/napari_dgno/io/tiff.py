"""Reading and writing TIFF / OME-TIFF images with clear one-line errors and atomic writes; reading
is also the one entry for every other format (:mod:`napari_dgno.io.formats`, OME-Zarr).

Why so careful: the ``dgno`` command runs unattended over whole plates, so a bad file must give one
readable line (not a traceback or a screen of tifffile warnings), and an interrupted run must never
leave a half-written TIFF that looks like a result.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, one_line
from .atomic import atomic_file, atomic_path
from .formats import (
    LAZY_BYTES,  # noqa: F401  (re-exported: read_image documents it)
    TIFF_MAGIC,
    lazy_above,
    not_tiff_message,
    read_common,
    read_vendor,
    reader_kind,
)
from .ome_zarr import is_zarr_path, read_zarr

_RGB = 2  # TIFF photometric interpretation RGB
# How far a page's data can expand when decoded, by TIFF compression code, with margin: none,
# LZW (~1300:1 at most), deflate (1032:1), PackBits (64:1). Other codecs are not checked.
_MAX_EXPANSION = {1: 1, 5: 4096, 8: 2048, 32946: 2048, 32773: 128}


@contextlib.contextmanager
def _quiet_tifffile():
    """tifffile logs warnings about damaged tags; we turn damage into one InputError instead."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_file(path: Path) -> bytes:
    """A readable, non-empty regular file: its first bytes (to tell the format)."""
    if not path.exists():
        if path.is_symlink():
            raise InputError(f"{path} is a broken symbolic link (its target is missing or loops)")
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    if not path.is_file():  # a named pipe or a device: opening it could wait forever
        raise InputError(f"{path} is not a regular file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    return head


def _check_complete(tif, path: Path) -> None:
    """Every strip/tile of every page must lie inside the file (catches truncated downloads early)."""
    size = path.stat().st_size
    for page in tif.pages:
        offsets, counts = page.dataoffsets, page.databytecounts
        if not offsets or len(offsets) != len(counts):
            raise InputError(f"{path} is corrupt (page without image data)")
        if max(o + c for o, c in zip(offsets, counts, strict=True)) > size:
            raise InputError(f"{path} is truncated (image data runs past the end of the file)")
        # A header that claims more pixels than its data can hold would be memory-mapped (and
        # fail) or decoded into terabytes later: uncompressed data has a known size, and the common
        # codecs a bounded expansion.
        key = getattr(page, "keyframe", None) or page  # a TiffFrame shares its keyframe's tags
        ratio = _MAX_EXPANSION.get(int(getattr(key, "compression", 1) or 1))
        bits = key.imagewidth * key.imagelength * key.imagedepth * key.samplesperpixel
        needed = -(-bits * key.bitspersample // 8)
        if ratio and sum(counts) * ratio < needed:
            raise InputError(
                f"{path} is corrupt: its header claims {key.imagelength}x{key.imagewidth} pixels, "
                f"more than its {sum(counts)} bytes of image data can hold"
            )


def _is_stack_of_shaped_series(tif) -> bool:
    series = tif.series
    return (
        tif.is_shaped
        and len(series) > 1
        and all(s.shape == series[0].shape and s.dtype == series[0].dtype for s in series)
    )


def _metadata(tif, series, page) -> dict:
    """Axes and pixel size, kept so the output opens like the input in Fiji/napari."""
    info: dict = {"format": "tiff"}
    if tif.is_ome:
        info["format"] = "ome"
        with contextlib.suppress(Exception):
            import tifffile

            pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
            sizes = {}
            for ax in "XYZ":
                if f"PhysicalSize{ax}" in pixels:
                    sizes[f"PhysicalSize{ax}"] = float(pixels[f"PhysicalSize{ax}"])
                    if f"PhysicalSize{ax}Unit" in pixels:
                        sizes[f"PhysicalSize{ax}Unit"] = str(pixels[f"PhysicalSize{ax}Unit"])
            if sizes:
                info["physical_size"] = sizes
    elif tif.is_imagej:
        info["format"] = "imagej"
        ij = tif.imagej_metadata or {}
        kept = {k: ij[k] for k in ("spacing", "unit", "finterval") if k in ij}
        if kept:
            info["imagej"] = kept
    elif tif.is_shaped:
        info["format"] = "shaped"
    with contextlib.suppress(Exception):
        if "XResolution" in page.tags and "YResolution" in page.tags:
            info["resolution"] = tuple(float(v) for v in page.get_resolution())
            info["resolutionunit"] = int(page.resolutionunit)
    return info


def read_image(path: str | os.PathLike, *, channel_axis: int | None = None, lazy: bool | int | None = None):
    """Read the first image series of a TIFF / OME-TIFF, level 0 of an OME-Zarr, a PNG / JPEG / BMP /
    GIF / WebP, or the first scene of a CZI / ND2 / LIF / DV (with the ``formats`` extra):
    ``(array, info)``. The reader follows the name's suffix, else the file's first bytes.

    ``array`` is numpy, or a dask array when ``lazy`` is True (``None``: lazy above 1 GiB; a number
    of bytes: lazy above that, so small files cost no dask import). ``info``
    holds ``dtype``, ``shape``, ``axes`` (tifffile letters from OME/ImageJ metadata, e.g. ``"ZYX"``),
    ``format``, pixel-size metadata and ``series`` (how many image series the file holds; only the
    first is read, except that equal-shaped planes written one by one are read as one stack), and
    can be handed to :func:`write_tiff_atomic`.

    RGB(A) images with samples interleaved after X (shape ``(..., Y, X, 3|4)``) are refused unless
    ``channel_axis`` names the samples axis; that axis is then moved to the front, so Y, X stay last.
    Planar colour images (``(3, Y, X)``) already have Y, X last and are read as a stack of planes.

    ``.zarr`` / ``.ome.zarr`` paths (and folders holding zarr metadata) are read with
    :func:`napari_dgno.io.ome_zarr.read_zarr`: always lazily unless ``lazy`` is False. Lazy TIFFs
    are read in row chunks (uncompressed data by positioned reads, compressed data by strip/tile).

    A lazy array over compressed TIFF data keeps the file open for as long as the array lives (it
    is closed when garbage collected); use :func:`open_image` to have it closed at a known point.
    """
    return _read_image(path, channel_axis=channel_axis, lazy=lazy, handles=None)


@contextlib.contextmanager
def open_image(path: str | os.PathLike, *, channel_axis: int | None = None, lazy: bool | int | None = None):
    """:func:`read_image` as a context manager: ``with open_image(p, lazy=True) as (array, info):``.

    Whatever file a lazy array reads from is closed when the block ends, normally or by an exception
    (KeyboardInterrupt included); the array must not be computed after that. Why: a batch over a
    plate reads hundreds of files in one worker process, and an open descriptor per input (freed
    only when the garbage collector gets to it) runs into the open-file limit and keeps deleted
    inputs' space in use.
    """
    handles: list = []
    try:
        yield _read_image(path, channel_axis=channel_axis, lazy=lazy, handles=handles)
    finally:
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.close()


def _read_image(path, *, channel_axis, lazy, handles: list | None):
    """:func:`read_image`; a file a lazy array keeps open is appended to ``handles`` (if given)."""
    path = Path(path)
    if is_zarr_path(path):
        return read_zarr(path, channel_axis=channel_axis, lazy=lazy)
    head = _check_file(path)
    kind = reader_kind(path, head)
    if kind == "common":
        return read_common(path, channel_axis)
    if kind == "vendor":
        return read_vendor(path, channel_axis, lazy)
    if head[:4] not in TIFF_MAGIC:
        raise InputError(not_tiff_message(path, head))
    import tifffile

    with _quiet_tifffile():
        try:
            tif = tifffile.TiffFile(path)
        except Exception as err:
            raise InputError(f"{path} is truncated or corrupt ({one_line(err)})") from None
        try:
            if not tif.series:
                raise InputError(f"{path} holds no image data")
            if _is_stack_of_shaped_series(tif):
                # tifffile writes each imwrite/write call as its own "shaped" series: a z-stack
                # saved plane by plane would otherwise be read as its first plane only.
                tif.close()
                tif = tifffile.TiffFile(path, is_shaped=False)
            series = tif.series[0]
            series_count = len(tif.series)
            shape, axes, page = tuple(series.shape), series.axes, series.pages[0] if series.pages else None
            if page is None or 0 in shape or not shape:
                raise InputError(f"{path} holds an empty image (shape {shape})")
            _check_complete(tif, path)
            info = _metadata(tif, series, page)
            photometric = int(getattr(page, "photometric", 1) or 1)
            # Interleaved samples put colour after X. Planar RGB (colour planes first, as tifffile
            # writes any (..., 3, Y, X) stack by default) keeps Y, X last: each plane is restored.
            interleaved = axes.endswith("S") and shape[-1] > 1
            if interleaved and channel_axis is None:
                kind = "an RGB(A)" if photometric == _RGB else "a multi-sample (interleaved)"
                raise InputError(
                    f"{path} is {kind} image (shape {shape}, axes {axes}); napari-dgno restores "
                    "single-channel images: split the channels first (or pass channel_axis in Python)"
                )
            use_lazy = lazy_above(lazy, series.nbytes)
            keep_open = False
            if use_lazy:
                array, keep_open = _lazy_series(tif, series, path)
            else:
                array = series.asarray()
        except InputError:
            tif.close()
            raise
        except Exception as err:  # damaged strips, failed decompression, short reads ...
            tif.close()
            raise InputError(f"{path} is truncated or corrupt ({one_line(err)})") from None
        if not keep_open:
            tif.close()
        elif handles is not None:
            handles.append(tif)
    if channel_axis is not None:
        channel_axis = channel_axis % len(shape)
        array = np.moveaxis(array, channel_axis, 0) if not use_lazy else _dask_moveaxis(array, channel_axis)
        axes = axes[channel_axis] + axes[:channel_axis] + axes[channel_axis + 1 :]
    info.update(
        series=series_count,
        path=str(path),
        dtype=str(array.dtype),
        shape=tuple(array.shape),
        axes=axes,
        compression=str(getattr(page.compression, "name", page.compression)).lower(),
        photometric=photometric,
    )
    return array, info


def _dask_moveaxis(array, axis):
    import dask.array as da

    return da.moveaxis(array, axis, 0)


def is_ome_path(path: str | os.PathLike) -> bool:
    name = Path(path).name.lower()
    return name.endswith((".ome.tif", ".ome.tiff"))


def _tiff_options(path: Path, metadata: dict | None, ndim: int, compression=None) -> tuple[dict, list[dict]]:
    """tifffile keywords, then the metadata variants to try in turn (the first that fits wins)."""
    metadata = dict(metadata or {})
    axes = metadata.get("axes")
    if axes is not None and len(axes) != ndim:
        axes = None
    kwargs: dict = {"photometric": "minisblack", "compression": compression}
    if "resolution" in metadata:
        kwargs["resolution"] = tuple(metadata["resolution"])
        kwargs["resolutionunit"] = metadata.get("resolutionunit")
    attempts = []
    if is_ome_path(path):
        meta = {"axes": axes} if axes else {}
        meta.update(metadata.get("physical_size", {}))
        attempts.append({"ome": True, "metadata": meta})
        attempts.append({"ome": True, "metadata": {}})
    else:
        if metadata.get("format") == "imagej" and axes:
            attempts.append({"imagej": True, "metadata": {"axes": axes, **metadata.get("imagej", {})}})
        attempts.append({"ome": False, "metadata": {"axes": axes} if axes else {}})
        attempts.append({"ome": False, "metadata": {}})
    return kwargs, attempts


def write_tiff_atomic(
    path: str | os.PathLike,
    array,
    metadata: dict | None = None,
    *,
    compression: str | None = None,
) -> Path:
    """Write ``array`` as float32 TIFF at ``path`` via a temporary file and an atomic rename.

    ``metadata`` is an ``info`` dict from :func:`read_image` (or any dict with ``axes``): axes and
    pixel sizes are kept; ``.ome.tif`` paths are written as OME-TIFF, inputs that were ImageJ
    hyperstacks as ImageJ, anything else as a plain TIFF whose description records the shape and
    axes. On any exception, KeyboardInterrupt included, nothing is left behind and an existing file
    at ``path`` is untouched.
    """
    import tifffile

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist")
    data = np.asarray(array, dtype=np.float32)
    kwargs, attempts = _tiff_options(path, metadata, data.ndim, compression)
    with atomic_path(path) as tmp:
        for i, extra in enumerate(attempts):
            try:
                tifffile.imwrite(tmp, data, **kwargs, **extra)
                break
            except (ValueError, TypeError, KeyError):
                # Metadata this format cannot hold (axes ImageJ cannot order, say): try the next.
                if i == len(attempts) - 1:
                    raise
    return path


class TiffRowWriter:
    """Writes finished rows straight into a contiguous float32 TIFF (``write_rows``).

    Why not ``tifffile.memmap``: pages written through a memory map stay in the process's resident
    set until unmapped, so a 30 GB result would look like 30 GB of memory; positioned writes go
    through the page cache instead and resident memory stays at one band.
    """

    def __init__(self, file, offset: int, shape: tuple[int, ...]):
        self.file, self.offset = file, int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.plane = self.shape[-2] * self.shape[-1] * 4

    def write_rows(self, idx: tuple, y0: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype="<f4")
        if rows.shape[-1] != self.shape[-1] or y0 + len(rows) > self.shape[-2]:
            raise ValueError(f"rows {y0}+{len(rows)} do not fit planes of shape {self.shape[-2:]}")
        plane = int(np.ravel_multi_index(idx, self.shape[:-2])) if idx else 0
        self.file.seek(self.offset + plane * self.plane + y0 * self.shape[-1] * 4)
        self.file.write(memoryview(rows).cast("B"))


@contextlib.contextmanager
def tiff_writer(path: str | os.PathLike, shape: tuple[int, ...], metadata: dict | None = None):
    """Create a float32 TIFF of ``shape`` at ``path`` atomically; yields a :class:`TiffRowWriter`.

    The file is laid out like :func:`write_tiff_atomic`'s (same metadata rules, uncompressed,
    contiguous), then filled row band by row band; it appears at ``path`` only once complete.
    """
    import tifffile

    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"output folder {path.parent} does not exist")
    shape = tuple(int(s) for s in shape)
    kwargs, attempts = _tiff_options(path, metadata, len(shape))
    with atomic_file(path) as f:  # unnamed while rows arrive: a killed run leaves no temporary file
        for i, extra in enumerate(attempts):
            try:
                f.seek(0)
                f.truncate()
                offset, _ = tifffile.imwrite(
                    f, shape=shape, dtype="float32", byteorder="<", returnoffset=True, **kwargs, **extra
                )
                break
            except (ValueError, TypeError, KeyError):
                if i == len(attempts) - 1:
                    raise
        yield TiffRowWriter(f, offset, shape)


class ContiguousTiff:
    """A lazily read, uncompressed, contiguous TIFF series (``shape``, ``dtype``, ``__getitem__``).

    Why: tifffile's zarr view makes one chunk of a whole single-strip page, so reading a band
    would decode the page; here every read maps just the bytes it needs, then unmaps them.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset = path, int(offset)
        self.shape, self.file_dtype = tuple(shape), np.dtype(dtype)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        mm = np.memmap(self.path, dtype=self.file_dtype, mode="r", offset=self.offset, shape=self.shape)
        out = np.array(mm[key], dtype=self.dtype)
        del mm  # the last reference: unmapped now, so the pages leave the resident set
        return out


def _lazy_series(tif, series, path: Path):
    """A dask array over the series: band-sized chunks for contiguous data, else tifffile's chunks;
    ``(array, reads_through_tif)``: contiguous data is read by path, so ``tif`` may be closed."""
    import dask.array as da

    page, shape, dtype = series.keyframe, tuple(series.shape), series.dtype
    contiguous = series.dataoffset is not None and int(getattr(page, "compression", 1) or 1) == 1
    if contiguous and shape[-2:] == tuple(page.shape[-2:]) and dtype.kind in "uif":
        source = ContiguousTiff(path, series.dataoffset, shape, dtype.newbyteorder(tif.byteorder))
        rows = max(1, min(shape[-2], (4 << 20) // (shape[-1] * dtype.itemsize)))  # ~4 MB chunks
        chunks = (1,) * (len(shape) - 2) + (rows, shape[-1])
        meta = np.empty((0,) * len(shape), dtype)
        return da.from_array(source, chunks=chunks, asarray=False, meta=meta), False
    import zarr

    return da.from_zarr(zarr.open(series.aszarr(), mode="r")), True
