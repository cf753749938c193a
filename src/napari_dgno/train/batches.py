"""Where training pairs come from, chosen by the ``data`` section of a training config.

A source offers ``make_batch(batch_size, rng)`` (two (B, 1, P, P) tensors), ``validation_pairs(n,
patch, seed)`` (fixed numpy pairs) and ``describe()`` (what goes into the training record).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.clean_images import cells3d_images, procedural_nuclei
from ..data.datasets import PairDataset, SimulatedPairs, fixed_validation_set
from ..data.varied import VariedSimulatedPairs
from ..errors import InputError
from ..physics.depth import DepthConfig
from ..physics.simulate import SimulationConfig

PROCEDURAL_IMAGES = 24  # 256² procedural images drawn once per run from the run's seed
VALIDATION_MICROSCOPES = 16
VALIDATION_BANK_SEED = 20_261_129  # fixed for every run, so validation numbers compare across runs


@dataclass
class DatasetSource:
    """Training batches from one dataset, validation pairs from another (or the same) one."""

    train: PairDataset
    validation: PairDataset
    info: dict = field(default_factory=dict)

    def make_batch(self, batch_size: int, rng: np.random.Generator):
        return self.train.make_batch(batch_size, rng)

    def validation_pairs(self, n: int, patch: int, seed: int):
        patch = min(patch, *_largest_patch(self.validation))
        return fixed_validation_set(self.validation, n, seed, patch=patch)

    def describe(self) -> dict:
        return dict(self.info)


def _largest_patch(dataset: PairDataset) -> tuple[int, ...]:
    images = getattr(dataset, "blurred", None) or getattr(dataset, "images", [])
    sizes = [min(im.shape[-2:]) for im in images]
    margin = 2 * getattr(dataset, "margin", 0) if isinstance(dataset, SimulatedPairs) else 0
    return tuple(s - margin for s in sizes) or (dataset.patch,)


def simulation_config(data: dict) -> SimulationConfig:
    return SimulationConfig(depth=DepthConfig(max_defocus_um=float(data.get("max_defocus_um", 20.0))))


def synthetic_source(data: dict, patch: int, seed: int) -> DatasetSource:
    """cells3d training slices plus procedural nuclei, blurred on the fly by the simulator."""
    sim = simulation_config(data)
    fraction = float(data.get("procedural_fraction", 0.3))
    rng = np.random.default_rng([seed, 7])
    procedural = [procedural_nuclei((256, 256), rng) for _ in range(PROCEDURAL_IMAGES)]
    cells = list(cells3d_images("train"))
    # Repeat the cells3d slices so that a random pick is procedural with probability ``fraction``.
    repeats = max(1, round(len(procedural) * (1 - fraction) / max(fraction, 1e-6) / len(cells)))
    train = SimulatedPairs(cells * repeats + procedural, patch, sim, seed=seed)
    val_rng = np.random.default_rng([seed, 8])
    val_images = cells + [procedural_nuclei((256 + 2 * sim.margin,) * 2, val_rng) for _ in range(4)]
    validation = SimulatedPairs(val_images, patch, sim, seed=seed + 1, augment=False)
    info = {
        "source": "synthetic",
        "clean_images": f"cells3d nuclei training slices ({len(cells)}) + {PROCEDURAL_IMAGES} procedural",
        "procedural_fraction": fraction,
        "max_defocus_um": sim.max_defocus_um,
        "simulator": "scalar pupil defocus PSF, scatter synthesis, Poisson-Gaussian 12-bit camera",
    }
    return DatasetSource(train, validation, info)


def varied_source(data: dict, patch: int, seed: int) -> DatasetSource:
    """cells3d and skin at their true scale plus procedural specimens, through a bank of random
    microscopes (``physics/microscope.py``). Validation uses the other lateral regions and its own
    microscopes, so it measures what the test set does: unseen specimens under unseen optics."""
    weights = data.get("weights")
    n = int(data.get("microscopes", 48))
    train = VariedSimulatedPairs("train", patch, n, bank_seed=[seed, 11], weights=weights, seed=seed)
    validation = VariedSimulatedPairs(
        "validation",
        patch,
        VALIDATION_MICROSCOPES,
        bank_seed=VALIDATION_BANK_SEED,
        seed=seed + 1,
        augment=False,
    )
    info = {
        "source": "varied",
        "clean_images": "cells3d train region (0.26 µm/px), skin.tif train region, procedural specimens",
        "weights": dict(zip(train.names, train.probabilities.round(3).tolist(), strict=True)),
        "microscopes": n,
        "simulator": "random objective/camera/wavelength/aberrations, scatter blur, haze, varied camera",
        "validation": "cells3d and skin validation regions, 16 microscopes of their own",
        "redrawn": "patches with under 1 ADU between their 1st and 99.8th percentiles (saturated)",
    }
    return DatasetSource(train, validation, info)


def build_source(data: dict, patch: int, seed: int) -> DatasetSource:
    kind = data.get("source", "synthetic")
    if kind == "synthetic":
        return synthetic_source(data, patch, seed)
    if kind == "varied":
        return varied_source(data, patch, seed)
    if kind in ("folder", "zstack"):
        return user_source(data, patch, seed)
    raise InputError(f"unknown data source {kind!r}: use varied, synthetic, folder or zstack")


def user_source(data: dict, patch: int, seed: int) -> DatasetSource:
    """The user's own pairs (``folder``: ``blurred_dir`` + ``sharp_dir``; ``zstack``: ``path``, optional
    ``focus_index``; both: optional ``val_fraction``), built exactly as the fine-tune dock builds them,
    so both hold out the same whole images (or strip) for validation."""
    from . import user_data  # it imports this module

    fraction = float(data.get("val_fraction", 0.2))
    if data.get("source") == "folder":
        source = user_data.folder_source(
            data["blurred_dir"], data["sharp_dir"], patch=patch, seed=seed, val_fraction=fraction
        )
    else:
        import tifffile

        stack = tifffile.imread(data["path"])
        source = user_data.zstack_source(
            stack,
            data.get("focus_index"),
            patch=patch,
            seed=seed,
            val_fraction=fraction,
            name=str(data["path"]),
        )
    source.info = {**data, **source.info}
    return source
