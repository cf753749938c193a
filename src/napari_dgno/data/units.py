"""Are a sharp image and its blurred version in the same intensity units? If not, which affine map
takes the sharp one into the blurred one's units?

Why it matters: inference normalises the blurred input (percentiles) and maps the network's output
back with the same map, so a model learns to produce the sharp image *in the blurred image's units*.
A reference stored in other units (float in [0, 1] next to uint16 camera frames, a deconvolved image
with its own scale and offset) would otherwise teach it garbage.

The map is fitted per pair: ``blurred ≈ a · (G_τ ⊛ sharp) + b``, where the Gaussian G_τ stands in for
the unknown blur and τ is chosen from a few widths by the best fit. Both images are lightly smoothed
first, so noise does not dilute the slope. When the fitted map is close to the identity the pair is
taken as it is (same units: a fitted map would only add its estimation error to the targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_dgno.errors import InputError

__all__ = ["UnitMap", "fit_unit_map"]

# px: Gaussians tried in place of the unknown PSF. Fine steps: a blur that is too wide or too narrow
# biases the slope (by 20 % between 2 and 4 px on a fine texture blurred by 3 px).
BLUR_WIDTHS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0)
NOISE_SIGMA = 1.0  # px: both images are smoothed this much before fitting
SAME_UNITS = 0.1  # identity if the map moves no intensity by more than this fraction of the range
MIN_CORRELATION = 0.3  # below this the sharp image does not explain the blurred one at all
MAX_SIDE = 1024  # larger planes are fitted on their central crop (enough pixels, bounded cost)


@dataclass(frozen=True)
class UnitMap:
    """``sharp_in_blurred_units = scale · sharp + offset``; ``same_units`` when that is the identity."""

    scale: float = 1.0
    offset: float = 0.0
    same_units: bool = True
    correlation: float = 1.0

    def apply(self, sharp: np.ndarray) -> np.ndarray:
        if self.same_units:
            return np.asarray(sharp, dtype=np.float32)
        return (np.asarray(sharp, dtype=np.float32) * self.scale + self.offset).astype(np.float32)

    def describe(self) -> str:
        if self.same_units:
            return "same units"
        return f"sharp mapped to blurred units: {self.scale:.4g} × sharp + {self.offset:.4g}"


def _crop(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    y0, x0 = max(0, (h - MAX_SIDE) // 2), max(0, (w - MAX_SIDE) // 2)
    return image[y0 : y0 + MAX_SIDE, x0 : x0 + MAX_SIDE].astype(np.float64)


def fit_unit_map(blurred: np.ndarray, sharp: np.ndarray, name: str = "pair") -> UnitMap:
    """The affine map of ``sharp`` into ``blurred``'s units (2-D planes of one shape).

    Raises :class:`InputError` (one line) when the sharp image does not explain the blurred one at
    all (correlation < ``MIN_CORRELATION`` even after blurring it): not the same field, or misaligned.
    """
    b, s = _crop(np.asarray(blurred)), _crop(np.asarray(sharp))
    if b.shape != s.shape:
        raise InputError(f"{name}: blurred {b.shape} and sharp {s.shape} differ in shape")
    b = ndi.gaussian_filter(b, NOISE_SIGMA)
    s = ndi.gaussian_filter(s, NOISE_SIGMA)
    if np.ptp(s) == 0 or np.ptp(b) == 0:
        return UnitMap()  # a constant image carries no scale: nothing to map
    bc = b - b.mean()
    best = None
    for tau in BLUR_WIDTHS:
        p = ndi.gaussian_filter(s, tau) if tau else s
        pc = p - p.mean()
        var_p = float(np.mean(pc * pc))
        if var_p <= 0:
            continue
        scale = float(np.mean(pc * bc)) / var_p
        corr = scale * np.sqrt(var_p / max(float(np.mean(bc * bc)), 1e-300))
        if best is None or corr > best[0]:
            best = (corr, scale, float(b.mean() - scale * p.mean()))
    if best is None:
        return UnitMap()
    corr, scale, offset = best
    if not corr >= MIN_CORRELATION or scale <= 0:
        raise InputError(
            f"{name}: the sharp image does not match the blurred one (correlation {corr:.2f} after "
            "blurring it); pair each blurred image with the sharp image of the same field, aligned"
        )
    lo, hi = np.percentile(s, [1.0, 99.8])
    span = max(float(np.percentile(b, 99.8) - np.percentile(b, 1.0)), 1e-12)
    moved = max(abs((scale - 1.0) * v + offset) for v in (lo, hi))
    return UnitMap(scale, offset, same_units=moved <= SAME_UNITS * span, correlation=float(corr))
