"""What the engine accepts and how it reads it: input checks, the one normalisation fit per call, and
a row reader that takes lazy inputs (dask, zarr, a streamed TIFF) one band of rows at a time."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import DGNOError, InputError
from ..normalize import Normalization, fit_normalization

MIN_SIDE = 8  # smallest Y or X we accept (smaller is an InputError); sides under the grid are padded
# Normalised inputs are clipped to this: a million times the 1-99.8 % range is no real intensity
# (a sentinel like FLT_MAX), and such values overflow the network's float32 sums into inf/NaN.
MAX_NORMALISED = 1e6


def is_lazy(image) -> bool:
    return not isinstance(image, np.ndarray) and all(
        hasattr(image, a) for a in ("shape", "dtype", "ndim", "__getitem__")
    )


def check_image(image, channel_axis: int | None):
    """Validate and return ``(array with Y, X last and channels first, lazy?)`` or raise InputError."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    lazy = is_lazy(image)
    if not lazy:
        try:
            image = np.asarray(image)
        except Exception as err:
            raise InputError(f"cannot turn the input into an array ({err})") from None
    dtype = np.dtype(image.dtype)
    if dtype.kind not in "uif":
        kind = {"b": "boolean", "c": "complex", "O": "object", "U": "text", "S": "bytes"}.get(
            dtype.kind, str(dtype)
        )
        raise InputError(f"cannot deblur a {kind} array ({dtype}); pass integer or float intensities")
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 2:
        raise InputError(f"need an image with at least 2 dimensions (..., Y, X), got shape {shape}")
    if 0 in shape:
        raise InputError(f"the image is empty (shape {shape})")
    if channel_axis is not None:
        if len(shape) < 3 or not -len(shape) <= channel_axis < len(shape):
            raise InputError(f"channel_axis {channel_axis} is not an axis of a colour image of shape {shape}")
        if lazy:
            import dask.array as da

            image = image if hasattr(image, "compute") else da.from_array(image)
            image = da.moveaxis(image, channel_axis, 0)
        else:
            image = np.moveaxis(image, channel_axis, 0)
        shape = tuple(int(s) for s in image.shape)
    elif len(shape) >= 3 and shape[-1] in (3, 4) and shape[-2] >= MIN_SIDE:
        raise InputError(
            f"shape {shape} looks like an RGB(A) image (last axis of {shape[-1]}), but Y, X must be "
            "the last two axes; convert to one channel, or pass channel_axis=-1 to deblur each channel"
        )
    if shape[-2] < MIN_SIDE or shape[-1] < MIN_SIDE:
        raise InputError(
            f"the image is {shape[-2]}x{shape[-1]} pixels (Y, X = last two axes); need at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )
    if not lazy and dtype.kind == "f" and not np.isfinite(image).all():
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        raise InputError(f"the image holds {bad} NaN or infinite value(s); replace them first")
    if not lazy and dtype.kind == "f" and dtype.itemsize > 4:
        peak = float(np.abs(image).max())
        if peak > float(np.finfo(np.float32).max):  # the float32 result could not hold them
            raise InputError(
                f"the image holds values up to {peak:.3g}, beyond float32's range; rescale it first"
            )
    return image, lazy


@contextlib.contextmanager
def _reading(lazy: bool):
    """A damaged file behind a lazy array fails at its first read: one line, not a codec traceback."""
    try:
        yield
    except (DGNOError, MemoryError):
        raise
    except Exception as err:
        if not lazy:
            raise
        raise InputError(f"could not read the input ({' '.join(str(err).split())})") from None


def fit_input(image, lazy: bool, idx: tuple | None = None) -> tuple[Normalization, float | None]:
    """Percentile normalisation over the whole input, or over plane ``idx`` of it;
    ``(norm, constant value or None)``.

    When the 1st and 99.8th percentiles coincide the percentile map is degenerate: a truly constant
    image (or plane) is returned as it is (deblurring a flat field changes nothing), anything else (a
    few bright spots on a flat background) falls back to a min-max range. A lazy input stays lazy:
    only the plane's (subsampled) chunks are read.
    """
    source = image
    if idx is not None:
        if lazy and not hasattr(image, "compute"):  # zarr and friends: dask keeps the plane lazy
            import dask.array as da

            source = da.from_array(image)
        source = source[idx]
    with _reading(lazy):
        norm = fit_normalization(source)
    if not (np.isfinite(norm.lo) and np.isfinite(norm.hi)):
        raise InputError("the image holds NaN or infinite values; replace them first")
    if norm.hi > norm.lo:
        return norm, None
    if lazy:  # chunk-wise reductions: never the whole input in memory
        import dask.array as da

        source = source if hasattr(source, "compute") else da.from_array(source)
        with _reading(lazy):
            lo, hi = (float(v) for v in da.compute(source.min(), source.max()))
    else:
        lo, hi = float(source.min()), float(source.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError("the image holds NaN or infinite values; replace them first")
    if hi == lo:
        return norm, lo
    return Normalization(lo, hi, 0.0, 100.0), None


def _row_bounds(image, height: int) -> np.ndarray | None:
    """Row offsets where the source's chunks start (dask or zarr), or None when it has no chunks."""
    chunks = getattr(image, "chunks", None)
    if not chunks:
        return None
    rows = chunks[-2]
    if isinstance(rows, (tuple, list)):  # dask: sizes of every chunk along the axis
        return np.cumsum([0, *(int(r) for r in rows)])
    return np.arange(0, height + int(rows), int(rows))  # zarr: one chunk size


class RowReader:
    """Reads one plane of the input as row bands, touching each source chunk once.

    Why: a lazy source (dask, zarr, a big TIFF) must never be read whole. Bands move down the plane
    and overlap, so rows already read are kept until the next band starts below them; reads are
    widened to the source's chunk rows, so a chunk is decoded once, not once per band.
    """

    def __init__(self, image, idx: tuple, lazy: bool):
        self.image, self.idx, self.lazy = image, idx, lazy
        self.height = int(image.shape[-2])
        self.bounds = _row_bounds(image, self.height) if lazy else None
        self.top, self.cache = 0, None  # cached rows [top, top + len(cache))
        self.max_rows = 0

    def _chunk_end(self, y: int) -> int:
        if self.bounds is None:
            return y
        return int(min(self.height, self.bounds[np.searchsorted(self.bounds, y)]))

    def _fetch(self, y0: int, y1: int) -> np.ndarray:
        try:
            rows = np.asarray(self.image[(*self.idx, slice(y0, y1), slice(None))])
        except DGNOError:
            raise
        except Exception as err:  # a damaged file behind a lazy array
            where = f"plane {self.idx} " if self.idx else ""
            raise InputError(
                f"could not read rows {y0}-{y1} of {where}the input ({' '.join(str(err).split())})"
            ) from None
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise InputError(f"rows {y0}-{y1} of the input hold NaN or infinite values; replace them first")
        return rows

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` of the plane in the input's dtype (a view for numpy input)."""
        if not self.lazy:
            return self.image[self.idx][y0:y1]
        end = self.top + (0 if self.cache is None else len(self.cache))
        if self.cache is None or not self.top <= y0 <= end:
            self.top, self.cache, end = y0, None, y0
        if y1 > end:
            fresh = self._fetch(end, max(y1, self._chunk_end(y1)))
            kept = self.cache[y0 - self.top :] if self.cache is not None else fresh[:0]
            self.cache, self.top = np.concatenate([kept, fresh]), y0
        else:
            self.cache, self.top = self.cache[y0 - self.top :], y0
        self.max_rows = max(self.max_rows, len(self.cache))
        return self.cache[: y1 - y0]
