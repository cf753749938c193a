"""Random defocus maps: piecewise smooth, with jumps.

Real slides are not flat: tissue folds, cells sit on different heights and the stage is tilted.
We model that as a few regions (Voronoi cells) each with its own defocus offset and tilt, plus a
smooth global tilt and curvature. Region borders are sharp jumps, which is exactly where a single
smooth global kernel fails and DGNO's elements with numerical fluxes are meant to help.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DepthConfig", "random_depth_map"]


@dataclass(frozen=True)
class DepthConfig:
    """Distribution of defocus maps; depths in µm, ``0`` = in focus (the PSF is symmetric in ±z).

    Each map first draws its own scale ``s ~ U(min_scale_um, max_defocus_um)`` so mildly blurred
    images are as common as badly blurred ones; the terms below are fractions of ``s``.
    """

    max_defocus_um: float = 32.0
    min_scale_um: float = 4.0
    max_regions: int = 5  # Voronoi cells; 1 means no jumps
    in_focus_fraction: float = 0.15  # region offsets ~ U(-f·s, s): some regions end up in focus
    region_tilt: float = 0.3  # largest change of a region's plane across the image
    global_tilt: float = 0.3
    curvature: float = 0.2


def random_depth_map(
    shape: tuple[int, int], rng: np.random.Generator, config: DepthConfig = DepthConfig()
) -> np.ndarray:
    """A float32 defocus map (µm) of ``shape``, clipped to ``[0, config.max_defocus_um]``.

    Deterministic for a given ``rng`` state.
    """
    h, w = shape
    # Coordinates in units of the image size, centred: the map's statistics do not depend on shape.
    span = float(max(h, w))
    y = ((np.arange(h) - (h - 1) / 2) / span)[:, None]
    x = ((np.arange(w) - (w - 1) / 2) / span)[None, :]

    hi = config.max_defocus_um
    scale = rng.uniform(min(config.min_scale_um, hi), hi)
    n_regions = int(rng.integers(1, config.max_regions + 1))

    seeds = rng.uniform(-0.5, 0.5, size=(n_regions, 2))
    offsets = rng.uniform(-config.in_focus_fraction, 1.0, size=n_regions) * scale
    tilts = _random_vectors(rng, n_regions) * config.region_tilt * scale

    if n_regions == 1:
        labels = np.zeros((h, w), dtype=np.intp)
    else:
        dist = (y[None] - seeds[:, 0, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None]) ** 2
        labels = np.argmin(dist, axis=0)
    depth = offsets[labels] + tilts[labels, 0] * y + tilts[labels, 1] * x

    gy, gx = _random_vectors(rng, 1)[0] * config.global_tilt * scale
    cyy, cxx, cxy = rng.uniform(-1.0, 1.0, size=3) * config.curvature * scale
    depth = depth + gy * y + gx * x + 4.0 * (cyy * y**2 + cxx * x**2 + cxy * x * y)
    return np.clip(depth, 0.0, hi).astype(np.float32)


def _random_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` 2-vectors with uniform direction and length ~ U(0, 1)."""
    angle = rng.uniform(0.0, 2 * np.pi, size=n)
    length = rng.uniform(0.0, 1.0, size=n)
    return np.stack([np.sin(angle), np.cos(angle)], axis=1) * length[:, None]
