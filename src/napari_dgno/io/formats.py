"""Which reader a file needs, and the readers for everything that is not TIFF or OME-Zarr.

Why here: biologists hold PNG / JPEG exports and vendor files (CZI, ND2, LIF, DV) as often as TIFFs.
Common 8/16-bit formats are read with imageio (a dependency); vendor formats with bioio and its
format plugins, an optional extra (``pip install 'napari-dgno[formats]'``), imported only when such
a file is opened, so ``dgno deblur`` on a TIFF never pays for them. Every failure is one line.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, one_line

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8", ".lsm")
COMMON_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# suffix -> the bioio plugin that reads it (all in the ``formats`` extra)
VENDOR_PLUGINS = {
    ".czi": "bioio-czi",
    ".nd2": "bioio-nd2",
    ".lif": "bioio-lif",
    ".dv": "bioio-dv",
    ".r3d": "bioio-dv",
}
FORMATS_EXTRA = "pip install 'napari-dgno[formats]'"
READABLE = "TIFF / OME-TIFF, OME-Zarr, PNG, JPEG, BMP, GIF, WebP; CZI, ND2, LIF, DV with " + FORMATS_EXTRA
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"GIF8": "GIF",
    b"ZISRAWFILE": "CZI",
}
_INCH = 2  # TIFF ResolutionUnit: pixels per inch


LAZY_BYTES = 1 << 30  # above this, read_image returns a dask array unless told otherwise


def lazy_above(lazy: bool | int | None, nbytes: int) -> bool:
    """Whether ``read_image(lazy=...)`` reads ``nbytes`` of data lazily: True, False, ``None``
    (above :data:`LAZY_BYTES`) or a byte count (above it)."""
    if lazy is None:
        return nbytes > LAZY_BYTES
    if isinstance(lazy, bool):
        return lazy
    return nbytes > int(lazy)


def suffix_of(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def sniff(head: bytes) -> str | None:
    """The format a file's first bytes announce (``"TIFF"``, ``"PNG"`` ...), or None."""
    if head[:4] in TIFF_MAGIC:
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def reader_kind(path: str | os.PathLike, head: bytes) -> str:
    """``"tiff"``, ``"common"`` or ``"vendor"`` from the name, else from the content; or InputError."""
    suffix = suffix_of(path)
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in COMMON_SUFFIXES:
        return "common"
    if suffix in VENDOR_PLUGINS:
        return "vendor"
    kind = sniff(head)
    if kind == "TIFF":
        return "tiff"
    if kind in ("PNG", "JPEG", "BMP", "GIF", "WebP"):
        return "common"
    raise InputError(f"{path} is not an image file napari-dgno reads ({READABLE})")


def not_tiff_message(path, head: bytes) -> str:
    kind = sniff(head)
    hint = f" (it is a {kind} file: rename it to match)" if kind and kind != "TIFF" else ""
    return f"{path} is not a TIFF file{hint}"


def _grey(array: np.ndarray, path, channel_axis) -> np.ndarray:
    """Colour samples after X: a grey image saved as RGB(A) keeps one channel; real colour is
    refused unless ``channel_axis`` names the samples (then they come first, like a TIFF's)."""
    if array.ndim < 3 or array.shape[-1] not in (2, 3, 4):
        return array
    if channel_axis is not None:
        return np.moveaxis(array, channel_axis % array.ndim, 0)
    samples = array.shape[-1]
    colour = array[..., : 1 if samples == 2 else 3]
    alpha = array[..., -1] if samples in (2, 4) else None
    opaque = alpha is None or bool((alpha == alpha.flat[0]).all())
    if opaque and bool((colour == colour[..., :1]).all()):
        return np.ascontiguousarray(colour[..., 0])
    raise InputError(
        f"{path} is an RGB(A) image (shape {array.shape}); napari-dgno restores single-channel "
        "images: split the channels first (or pass channel_axis in Python)"
    )


def read_common(path: Path, channel_axis: int | None = None):
    """A PNG / JPEG / BMP / GIF / WebP through imageio: ``(numpy array, info)``, 8 or 16 bit as
    stored, with the file's pixel density (PNG pHYs, JPEG/BMP dpi) kept as TIFF resolution tags."""
    import imageio.v3 as iio

    try:
        array = np.asarray(iio.imread(path))
        meta = iio.immeta(path)
    except (InputError, MemoryError):
        raise
    except Exception as err:  # truncated data, a wrong name, a decoder's complaint
        raise InputError(f"{path} is truncated or corrupt ({one_line(err)})") from None
    if array.dtype.kind not in "uif":
        raise InputError(f"{path} holds {array.dtype} pixels; expected 8- or 16-bit intensities")
    array = _grey(array, path, channel_axis)
    info: dict = {"format": suffix_of(path).lstrip(".") or "image", "series": 1}
    with contextlib.suppress(TypeError, ValueError, IndexError):
        dpi = tuple(float(v) for v in meta.get("dpi", ()))[:2]
        if len(dpi) == 2 and min(dpi) > 0:
            info.update(resolution=dpi, resolutionunit=_INCH)
    axes = "YX" if array.ndim == 2 else "Q" * (array.ndim - 2) + "YX"
    info.update(path=str(path), dtype=str(array.dtype), shape=tuple(array.shape), axes=axes)
    return array, info


def _missing_reader(path: Path, plugin: str) -> InputError:
    return InputError(
        f"reading {suffix_of(path)} files needs bioio and its {plugin} reader, an optional extra: "
        f"{FORMATS_EXTRA}"
    )


def read_vendor(path: Path, channel_axis: int | None = None, lazy: bool | None = None):
    """A vendor file (CZI, ND2, LIF, DV) through bioio, first scene: ``(dask or numpy, info)``.

    Singleton axes of bioio's TCZYX order are dropped; pixel sizes (µm) go into ``physical_size``,
    which an ``.ome.tif`` output keeps. RGB samples are refused as for other formats.
    """
    plugin = VENDOR_PLUGINS.get(suffix_of(path), "format")
    try:
        from bioio import BioImage
    except ImportError:
        raise _missing_reader(path, plugin) from None
    try:
        image = BioImage(path)
        data, order = image.dask_data, str(image.dims.order)
        sizes = image.physical_pixel_sizes
        scenes = len(image.scenes)
    except (InputError, MemoryError):
        raise
    except Exception as err:
        if "unsupported" in type(err).__name__.lower() or "no reader" in str(err).lower():
            raise _missing_reader(path, plugin) from None
        raise InputError(f"{path} is truncated or corrupt ({one_line(err)})") from None
    keep = [i for i, (a, n) in enumerate(zip(order, data.shape, strict=True)) if n > 1 or a in "YX"]
    data = data[tuple(slice(None) if i in keep else 0 for i in range(data.ndim))]
    axes = "".join(order[i] for i in keep)
    if axes.endswith("S") and channel_axis is None:
        raise InputError(
            f"{path} is an RGB image (axes {axes}); napari-dgno restores single-channel images: "
            "split the channels first (or pass channel_axis in Python)"
        )
    if channel_axis is not None:
        import dask.array as da

        channel_axis %= data.ndim
        data = da.moveaxis(data, channel_axis, 0)
        axes = axes[channel_axis] + axes[:channel_axis] + axes[channel_axis + 1 :]
    physical = {}
    for letter in "ZYX":
        value = getattr(sizes, letter, None)
        if value:
            physical[f"PhysicalSize{letter}"] = float(value)
            physical[f"PhysicalSize{letter}Unit"] = "µm"
    if not lazy_above(True if lazy is None else lazy, data.nbytes):  # always lazy unless told
        try:
            data = data.compute()
        except Exception as err:
            raise InputError(f"{path} is truncated or corrupt ({one_line(err)})") from None
    info = {"format": suffix_of(path).lstrip("."), "series": scenes, "axes": axes}
    if physical:
        info["physical_size"] = physical
    info.update(path=str(path), dtype=str(data.dtype), shape=tuple(data.shape))
    return data, info
