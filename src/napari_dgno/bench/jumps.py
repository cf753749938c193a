"""Where do methods gain? PSNR gain binned by the distance to the nearest blur jump.

DGNO's claim is about region borders: a single global kernel is wrong on both sides of a jump in
defocus. Every test image has its own optics, so a jump is measured in what the image shows, the
blur: the geometric blur radius (px) of each pixel's depth on that image's optics. The depth maps
are piecewise smooth with jumps between regions: within a region the tilts and curvature of
``physics/depth.py`` change the depth by at most 1.8 x the map's scale across the image, so the
radius by at most 1.8 x 20 px / 64 px < 0.6 px per pixel (largest test blur 20 px, smallest test
image 64 px). A neighbour difference above 1 px of blur radius therefore marks a jump and nothing
else.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_dgno.physics.psf import Optics, geometric_radius_px

JUMP_THRESHOLD_PX = 1.0
DISTANCE_BINS = (0.0, 8.0, 16.0, 32.0, 64.0, np.inf)  # px, half-open [lo, hi)


def bin_labels(bins=DISTANCE_BINS) -> list[str]:
    pairs = zip(bins[:-1], bins[1:], strict=True)
    return [f"{lo:g}–{hi:g} px" if np.isfinite(hi) else f"≥{lo:g} px" for lo, hi in pairs]


def blur_radius_map(depth: np.ndarray, optics: Optics) -> np.ndarray:
    """Geometric blur radius (px) of every pixel's depth (µm) on ``optics``."""
    return np.asarray(geometric_radius_px(np.asarray(depth, dtype=np.float64), optics), dtype=np.float64)


def jump_mask(blur_px: np.ndarray, threshold_px: float = JUMP_THRESHOLD_PX) -> np.ndarray:
    """Pixels on either side of a neighbour pair (4-neighbourhood) whose blur radii differ > threshold."""
    blur_px = np.asarray(blur_px, dtype=np.float64)
    mask = np.zeros(blur_px.shape, dtype=bool)
    dy = np.abs(np.diff(blur_px, axis=0)) > threshold_px
    dx = np.abs(np.diff(blur_px, axis=1)) > threshold_px
    mask[:-1] |= dy
    mask[1:] |= dy
    mask[:, :-1] |= dx
    mask[:, 1:] |= dx
    return mask


def jump_distance(blur_px: np.ndarray, threshold_px: float = JUMP_THRESHOLD_PX) -> np.ndarray:
    """Euclidean distance (px) of every pixel to the nearest jump pixel; inf if there is no jump."""
    mask = jump_mask(blur_px, threshold_px)
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
