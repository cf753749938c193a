"""Reading and writing TIFF / OME-TIFF images with clear one-line errors and atomic writes.

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

from ..errors import InputError
from .checkpoint import atomic_path

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
LAZY_BYTES = 1 << 30  # above this, read_image returns a dask array unless told otherwise
_RGB = 2  # TIFF photometric interpretation RGB


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


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a TIFF file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    if head not in TIFF_MAGIC:
        raise InputError(f"{path} is not a TIFF file")


def _check_complete(tif, path: Path) -> None:
    """Every strip/tile of every page must lie inside the file (catches truncated downloads early)."""
    size = path.stat().st_size
    for page in tif.pages:
        offsets, counts = page.dataoffsets, page.databytecounts
        if not offsets or len(offsets) != len(counts):
            raise InputError(f"{path} is corrupt (page without image data)")
        if max(o + c for o, c in zip(offsets, counts, strict=True)) > size:
            raise InputError(f"{path} is truncated (image data runs past the end of the file)")


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


def read_image(path: str | os.PathLike, *, channel_axis: int | None = None, lazy: bool | None = None):
    """Read the first image series of a TIFF / OME-TIFF: ``(array, info)``.

    ``array`` is numpy, or a dask array when ``lazy`` is True (``None``: lazy above 1 GiB). ``info``
    holds ``dtype``, ``shape``, ``axes`` (tifffile letters from OME/ImageJ metadata, e.g. ``"ZYX"``),
    ``format``, pixel-size metadata and ``series`` (how many image series the file holds; only the
    first is read, except that equal-shaped planes written one by one are read as one stack), and
    can be handed to :func:`write_tiff_atomic`.

    RGB(A) images with samples interleaved after X (shape ``(..., Y, X, 3|4)``) are refused unless
    ``channel_axis`` names the samples axis; that axis is then moved to the front, so Y, X stay last.
    Planar colour images (``(3, Y, X)``) already have Y, X last and are read as a stack of planes.
    """
    path = Path(path)
    _check_file(path)
    import tifffile

    with _quiet_tifffile():
        try:
            tif = tifffile.TiffFile(path)
        except Exception as err:
            raise InputError(f"{path} is truncated or corrupt ({_one_line(err)})") from None
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
            use_lazy = series.nbytes > LAZY_BYTES if lazy is None else lazy
            if use_lazy:
                import dask.array as da
                import zarr

                array = da.from_zarr(zarr.open(series.aszarr(), mode="r"))
            else:
                array = series.asarray()
        except InputError:
            tif.close()
            raise
        except Exception as err:  # damaged strips, failed decompression, short reads ...
            tif.close()
            raise InputError(f"{path} is truncated or corrupt ({_one_line(err)})") from None
        if not use_lazy:
            tif.close()
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
    metadata = dict(metadata or {})
    axes = metadata.get("axes")
    if axes is not None and len(axes) != data.ndim:
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
