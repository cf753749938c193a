"""Where training pairs come from, chosen by the ``data`` section of a training config.

A source offers ``make_batch(batch_size, rng)`` (two (B, 1, P, P) tensors), ``validation_pairs(n,
patch, seed)`` (fixed numpy pairs) and ``describe()`` (what goes into the training record).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.clean_images import cells3d_images, procedural_nuclei
from ..data.datasets import FolderPairs, PairDataset, SimulatedPairs, ZStackPairs, fixed_validation_set
from ..errors import InputError
from ..physics.depth import DepthConfig
from ..physics.simulate import SimulationConfig

PROCEDURAL_IMAGES = 24  # 256² procedural images drawn once per run from the run's seed


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


def build_source(data: dict, patch: int, seed: int) -> DatasetSource:
    kind = data.get("source", "synthetic")
    if kind == "synthetic":
        return synthetic_source(data, patch, seed)
    if kind == "folder":
        dataset = FolderPairs(data["blurred_dir"], data["sharp_dir"], patch, seed)
        return DatasetSource(dataset, dataset, {"source": "folder", **data})
    if kind == "zstack":
        import tifffile

        stack = tifffile.imread(data["path"])
        dataset = ZStackPairs(stack, data.get("focus_index"), patch, seed)
        return DatasetSource(dataset, dataset, {"source": "zstack", **data})
    raise InputError(f"unknown data source {kind!r}: use synthetic, folder or zstack")
