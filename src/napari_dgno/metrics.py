"""PSNR / SSIM with an explicit data range, the one way every number in this project is computed.

``range="gt"``: the data range is fixed from the ground truth (max − min), the honest convention.
``range="minmax"``: both images are min–max normalised to [0, 1] on their own first, as the paper does.
skimage's default range for integer dtypes (65535 for uint16) would inflate PSNR by ~24 dB: never used.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def psnr_ssim(restored, truth, convention: str = "gt") -> tuple[float, float]:
    restored = np.asarray(restored, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if convention == "minmax":
        restored, truth = _minmax(restored), _minmax(truth)
        data_range = 1.0
    elif convention == "gt":
        data_range = float(truth.max() - truth.min()) or 1.0
    else:
        raise ValueError(f"unknown metric convention {convention!r}")
    psnr = peak_signal_noise_ratio(truth, restored, data_range=data_range)
    ssim = structural_similarity(truth, restored, data_range=data_range)
    return float(psnr), float(ssim)


def mean_metrics(pairs, convention: str = "gt") -> dict:
    """Mean PSNR / SSIM over (restored, truth) pairs."""
    values = np.array([psnr_ssim(r, t, convention) for r, t in pairs])
    return {"psnr": float(values[:, 0].mean()), "ssim": float(values[:, 1].mean())}
