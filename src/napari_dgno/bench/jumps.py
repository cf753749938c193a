"""Where do methods gain? PSNR gain binned by the distance to the nearest depth jump.

DGNO's claim is about region borders: a single global kernel is wrong on both sides of a jump in
defocus. The depth maps are piecewise smooth (tilts change by ~0.02 µm/px) with jumps of ~1 µm and
more between regions, so a neighbour difference above 1 µm marks a jump and nothing else.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

JUMP_THRESHOLD_UM = 1.0
DISTANCE_BINS = (0.0, 8.0, 16.0, 32.0, 64.0, np.inf)  # px, half-open [lo, hi)


def bin_labels(bins=DISTANCE_BINS) -> list[str]:
    pairs = zip(bins[:-1], bins[1:], strict=True)
    return [f"{lo:g}–{hi:g} px" if np.isfinite(hi) else f"≥{lo:g} px" for lo, hi in pairs]


def jump_mask(depth: np.ndarray, threshold_um: float = JUMP_THRESHOLD_UM) -> np.ndarray:
    """Pixels on either side of a neighbour pair (4-neighbourhood) whose depths differ > threshold."""
    depth = np.asarray(depth, dtype=np.float64)
    mask = np.zeros(depth.shape, dtype=bool)
    dy = np.abs(np.diff(depth, axis=0)) > threshold_um
    dx = np.abs(np.diff(depth, axis=1)) > threshold_um
    mask[:-1] |= dy
    mask[1:] |= dy
    mask[:, :-1] |= dx
    mask[:, 1:] |= dx
    return mask


def jump_distance(depth: np.ndarray, threshold_um: float = JUMP_THRESHOLD_UM) -> np.ndarray:
    """Euclidean distance (px) of every pixel to the nearest jump pixel; inf if there is no jump."""
    mask = jump_mask(depth, threshold_um)
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndi.distance_transform_edt(~mask)


def bin_index(distance: np.ndarray, bins=DISTANCE_BINS) -> np.ndarray:
    """Bin of each pixel (0 … len(bins) − 2)."""
    return np.digitize(distance, bins[1:-1], right=False)


MIN_PIXELS = 64  # a bin with fewer pixels in an image says nothing about that image


def binned_psnr(
    restored, truth, bins_of_pixels: np.ndarray, n_bins: int, min_pixels: int = MIN_PIXELS
) -> list[float | None]:
    """Local PSNR per bin: MSE over the bin's pixels, data range from the whole ground truth.

    None for a bin with fewer than ``min_pixels`` pixels.
    """
    restored = np.asarray(restored, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    data_range = float(truth.max() - truth.min()) or 1.0
    err = (restored - truth) ** 2
    out = []
    for b in range(n_bins):
        sel = bins_of_pixels == b
        if np.count_nonzero(sel) < max(min_pixels, 1):
            out.append(None)
            continue
        mse = float(err[sel].mean())
        out.append(float(10 * np.log10(data_range**2 / mse)) if mse > 0 else float("inf"))
    return out
