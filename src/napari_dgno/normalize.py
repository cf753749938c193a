"""Percentile normalisation: the one place that maps intensities to the network's range and back.

Training and inference both go through these functions, so the model always sees the same units:
the 1st and 99.8th percentiles of the *blurred* input become 0 and 1, and the inverse map brings the
restored image back to the input's intensity units. Inference fits one map per 2-D plane by default
(a z-stack whose planes differ 10x in brightness must give each plane what it gets alone); a fit over
a whole stack subsamples Y and X only, never the planes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_LOW = 1.0
DEFAULT_HIGH = 99.8
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Normalization:
    """An affine map ``x -> (x - lo) / (hi - lo)`` fixed from one image's percentiles."""

    lo: float
    hi: float
    low_percentile: float = DEFAULT_LOW
    high_percentile: float = DEFAULT_HIGH

    @property
    def scale(self) -> float:
        # A constant image has hi == lo; any positive scale keeps the map invertible.
        return max(self.hi - self.lo, 1e-12 if self.hi == 0 else abs(self.hi) * 1e-6)

    @property
    def _wide(self) -> bool:
        # Ranges far from 1 (float32's extremes, subnormal values) overflow or underflow float32
        # arithmetic into inf/NaN; they are computed in float64. Ordinary ranges stay in float32.
        return not (1e-30 < self.scale < 1e30 and abs(self.lo) < 1e30)

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self._wide:
            return ((np.asarray(image, dtype=np.float64) - self.lo) / self.scale).astype(np.float32)
        return ((np.asarray(image, dtype=np.float32) - self.lo) / self.scale).astype(np.float32)

    def invert(self, image: np.ndarray) -> np.ndarray:
        if self._wide:  # clipped: a float32 result cannot hold more than float32's range
            out = np.asarray(image, dtype=np.float64) * self.scale + self.lo
            return np.clip(out, -_F32_MAX, _F32_MAX).astype(np.float32)
        return (np.asarray(image, dtype=np.float32) * self.scale + self.lo).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_normalization(
    image, low: float = DEFAULT_LOW, high: float = DEFAULT_HIGH, max_samples: int = 4_000_000
) -> Normalization:
    """Percentiles of ``image`` (numpy or dask), exact up to ``max_samples`` values.

    Larger arrays are subsampled on a regular grid over Y and X (the last two axes) only, so every
    plane of a stack contributes: a step on every axis skipped whole planes, and a stack whose second
    plane was 10x brighter got the first plane's range. A 2-D image is subsampled as it always was.
    """
    arr = image
    size = int(np.prod(arr.shape)) if arr.shape else 1
    if size > max_samples:
        axes = min(arr.ndim, 2)
        step = int(np.ceil((size / max_samples) ** (1.0 / max(axes, 1))))
        arr = arr[(Ellipsis, *(slice(None, None, step),) * axes)]
    arr = np.asarray(arr, dtype=np.float32)
    lo, hi = np.percentile(arr, [low, high])
    return Normalization(float(lo), float(hi), float(low), float(high))
