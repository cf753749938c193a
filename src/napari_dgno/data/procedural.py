"""Procedural specimens at a physical pixel size: nuclei, filaments, puncta, textured cytoplasm.

Why procedural at all: the only real training images we may use are one cells3d field and one
skin section. Drawing structures whose sizes are given in µm, at the simulated camera's pixel size,
adds shapes the network would otherwise never see (thin lines, diffraction-limited spots, smooth
cell bodies) at the right scale for each microscope, in sparse and dense fields.

Every generator returns float32 in relative units (background ≈ 0, bright structures ≈ 1).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_dgno.data.clean_images import procedural_nuclei

__all__ = ["KINDS", "cytoplasm", "filaments", "procedural_specimen", "puncta"]


def nuclei(shape, pixel_um: float, rng: np.random.Generator) -> np.ndarray:
    """Hoechst-like nuclei 8–18 µm across (radius 3–9 µm), sparse to confluent."""
    radius = (max(3.0 / pixel_um, 1.5), max(9.0 / pixel_um, 2.0))
    return procedural_nuclei(shape, rng, radius_px=radius, density=float(rng.uniform(0.1, 0.9)))


def filaments(shape, pixel_um: float, rng: np.random.Generator) -> np.ndarray:
    """Microtubule / actin-like fibres: persistent random walks 0.1–0.4 µm thick, 5–60 µm long."""
    h, w = shape
    area_um2 = h * w * pixel_um**2
    n = max(1, int(rng.poisson(area_um2 * rng.uniform(0.002, 0.02))))
    image = np.zeros(shape, dtype=np.float64)
    step = 0.5  # px between points along a fibre
    for _ in range(n):
        length_px = rng.uniform(5.0, 60.0) / pixel_um
        count = max(2, int(length_px / step))
        persistence = rng.uniform(0.02, 0.15)  # radians of turn per step, s.d.
        angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, persistence, count))
        y = rng.uniform(0, h) + np.cumsum(step * np.sin(angle))
        x = rng.uniform(0, w) + np.cumsum(step * np.cos(angle))
        _splat(image, y, x, rng.uniform(0.3, 1.0) * step * np.ones(count))
    width_px = rng.uniform(0.1, 0.4) / pixel_um
    image = ndi.gaussian_filter(image, max(width_px / 2.355, 0.3))
    return _relative(image, rng)


def puncta(shape, pixel_um: float, rng: np.random.Generator) -> np.ndarray:
    """Vesicle / spot-like puncta 0.1–0.6 µm, log-normal brightness, sparse or crowded."""
    h, w = shape
    area_um2 = h * w * pixel_um**2
    n = max(1, int(rng.poisson(area_um2 * rng.uniform(0.01, 0.3))))
    image = np.zeros(shape, dtype=np.float64)
    _splat(image, rng.uniform(0, h, n), rng.uniform(0, w, n), rng.lognormal(0.0, 0.6, n))
    size_px = rng.uniform(0.1, 0.6) / pixel_um
    image = ndi.gaussian_filter(image, max(size_px / 2.355, 0.3))
    return _relative(image, rng)


def cytoplasm(shape, pixel_um: float, rng: np.random.Generator) -> np.ndarray:
    """Cell bodies 20–60 µm across, filled with smooth-to-grainy texture, darker nuclear holes."""
    h, w = shape
    cells = procedural_nuclei(
        shape,
        rng,
        radius_px=(max(10.0 / pixel_um, 2.0), max(30.0 / pixel_um, 3.0)),
        density=rng.uniform(0.3, 1.0),
    )
    grain = ndi.gaussian_filter(rng.standard_normal(shape), max(rng.uniform(0.3, 2.0) / pixel_um, 0.5))
    grain /= max(float(grain.std()), 1e-12)
    image = cells * np.clip(1.0 + rng.uniform(0.2, 0.6) * grain, 0.0, None)
    if rng.random() < 0.6:
        holes = procedural_nuclei(shape, rng, radius_px=(max(4.0 / pixel_um, 1.5), max(8.0 / pixel_um, 2.0)))
        image *= 1.0 - rng.uniform(0.3, 0.9) * np.clip(holes / 0.3, 0.0, 1.0)
    return _relative(image, rng)


KINDS = {"nuclei": nuclei, "filaments": filaments, "puncta": puncta, "cytoplasm": cytoplasm}


def procedural_specimen(shape, pixel_um: float, rng: np.random.Generator) -> np.ndarray:
    """One of the kinds above, or a mixture of two or three (a cell with stained nucleus, fibres
    and vesicles), drawn at ``pixel_um``."""
    names = list(KINDS)
    if rng.random() < 0.5:
        return KINDS[names[int(rng.integers(len(names)))]](shape, pixel_um, rng)
    picks = rng.choice(len(names), size=int(rng.integers(2, 4)), replace=False)
    image = sum(rng.uniform(0.3, 1.0) * KINDS[names[i]](shape, pixel_um, rng) for i in picks)
    return _relative(image, rng, background=0.0)


def _splat(image: np.ndarray, y, x, weight) -> None:
    """Add ``weight`` at sub-pixel points (bilinear), dropping points outside the image."""
    h, w = image.shape
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    for dy, dx, share in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(image, (yy[inside], xx[inside]), (weight * share)[inside])


def _relative(image: np.ndarray, rng: np.random.Generator, background: float | None = None) -> np.ndarray:
    """Scale so the 99.9th percentile is 1, on a dim smooth background; float32 in [0, 1]."""
    image = np.asarray(image, dtype=np.float64)
    image = image / max(float(np.percentile(image, 99.9)), 1e-9)
    level = rng.uniform(0.0, 0.05) if background is None else background
    image = np.clip(image, 0.0, 1.0) + level
    return (image / image.max()).astype(np.float32)
