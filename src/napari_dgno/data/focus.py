"""Which plane of a z-stack is in focus?

Used to build training pairs from a user's z-stack the way BBBC006 pairs are built: the sharpest
plane is the target, the others are its blurred versions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_dgno.errors import InputError

__all__ = ["find_focus_plane", "focus_measure"]


def focus_measure(image: np.ndarray, method: str = "laplacian", sigma: float = 1.0) -> float:
    """Sharpness of a 2-D image; higher is sharper.

    ``"laplacian"``: variance of the Laplacian normalised by the squared mean, so that planes of
    different brightness compare fairly. ``"brenner"``: mean squared 2-px difference, normalised
    the same way. A light Gaussian (``sigma`` px) first keeps pixel noise from looking sharp.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"focus measure needs a 2-D image, got shape {image.shape}")
    if sigma > 0:
        image = ndi.gaussian_filter(image, sigma)
    norm = max(float(np.mean(image)) ** 2, 1e-12)
    if method == "laplacian":
        return float(np.var(ndi.laplace(image)) / norm)
    if method == "brenner":
        dy = image[2:, :] - image[:-2, :]
        dx = image[:, 2:] - image[:, :-2]
        return float((np.mean(dy**2) + np.mean(dx**2)) / norm)
    raise InputError(f"unknown focus measure {method!r}; use 'laplacian' or 'brenner'")


def find_focus_plane(stack: np.ndarray, axis: int = 0, method: str = "laplacian") -> int:
    """Index along ``axis`` of the sharpest plane of a 3-D stack."""
    stack = np.asarray(stack)
    if stack.ndim != 3:
        raise InputError(f"find_focus_plane needs a 3-D stack, got shape {stack.shape}")
    planes = np.moveaxis(stack, axis, 0)
    return int(np.argmax([focus_measure(p, method) for p in planes]))
