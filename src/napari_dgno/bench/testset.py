"""The frozen benchmark images and the validation images the classical methods are tuned on.

The protocol (README, "Results"): three disjoint sets. Training uses cells3d's and skin's training
regions under a bank of random microscopes; **validation** images come from cells3d's validation
region: training's checkpoint choice and early stopping use patches of it under 16 microscopes of
their own (``train.batches.varied_source``), and :func:`tuning_set` (the classical methods'
settings) uses whole images of it plus procedural specimens of its own seed; the **test** set
(:func:`benchmark_set`) uses cells3d's test region and procedural specimens of another seed, and
only ever reports. cells3d is split by lateral region with 8 µm guard bands
(``data.clean_images.CELLS3D_REGIONS``), so no nucleus is in two sets. Every item has its own random
microscope from the same ranges as training (``physics/microscope.py``), but drawn from its own
seed: the test optics were never seen in training.

Each image has its own generator (``default_rng([seed, source, i])``), so the quick set is the first
items of the full set, not a different draw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from napari_dgno.data.clean_images import CELLS3D_PIXEL_UM, CELLS3D_SLICES, cells3d_region
from napari_dgno.data.procedural import procedural_specimen
from napari_dgno.data.varied import MAX_REDRAWS, MIN_SPAN_ADU, at_pixel_size
from napari_dgno.normalize import fit_normalization
from napari_dgno.physics import SimulationConfig, relative_intensity, simulate_pair
from napari_dgno.physics.microscope import MicroscopeRanges

__all__ = ["BenchItem", "BenchSet", "benchmark_set", "fingerprint", "tuning_set"]

RANGES = MicroscopeRanges()
TEST_SEED = 20_261_130
VALIDATION_SEED = 20_261_131
PROCEDURAL_SIZE = 192
N_PROCEDURAL = 10
CELLS3D_STEP = 3  # every 3rd in-focus slice (0.87 µm apart): 10 per region
# cells3d's test region is 112 px at 0.26 µm (29 µm); a pixel of at most 0.45 µm keeps it >= 64 px.
CELLS3D_MAX_PIXEL_UM = 0.45


@dataclass(frozen=True, eq=False)
class BenchItem:
    """One benchmark pair. Images in camera ADU (float32), depth in µm (what blurred each pixel),
    ``source`` ("cells3d" or "procedural") and the microscope that took it."""

    name: str
    blurred: np.ndarray
    sharp: np.ndarray
    depth: np.ndarray
    source: str = ""
    config: SimulationConfig | None = None


@dataclass(frozen=True)
class BenchSet:
    items: list[BenchItem]
    notes: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.items)

    @property
    def megapixels(self) -> float:
        return sum(i.sharp.size for i in self.items) / 1e6

    def by_source(self) -> dict[str, list[int]]:
        """Indices of the items of each source, for per-source means."""
        out: dict[str, list[int]] = {}
        for i, item in enumerate(self.items):
            out.setdefault(item.source, []).append(i)
        return out


def benchmark_set(quick: bool = False) -> BenchSet:
    """The test set: 10 procedural specimens + 10 cells3d test-region slices (quick: 1 + 1)."""
    return _build("test", TEST_SEED, quick)


def tuning_set(quick: bool = False) -> BenchSet:
    """The validation set, built like the test set from the validation region and another seed."""
    return _build("validation", VALIDATION_SEED, quick)


def fingerprint(items: list[BenchItem]) -> str:
    """SHA-256 (16 hex digits) of names and arrays: equal fingerprints, equal benchmark data.

    Bit-identical on one machine; another FFT/BLAS build may round the blur differently.
    """
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.name.encode())
        for array in (item.blurred, item.sharp, item.depth):
            digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return digest.hexdigest()[:16]


def _build(split: str, seed: int, quick: bool) -> BenchSet:
    items, notes = [], []
    for i in range(1 if quick else N_PROCEDURAL):
        rng = np.random.default_rng([seed, 0, i])

        def procedural(rng=rng, i=i):
            config = RANGES.sample(rng)
            sharp = procedural_specimen((PROCEDURAL_SIZE, PROCEDURAL_SIZE), config.optics.pixel_um, rng)
            return _pair(f"procedural-{i:02d}", "procedural", sharp, config, rng)

        items.append(_first_usable(procedural))
    try:
        region = cells3d_region(split)
    except RuntimeError as err:  # the sample-data wheel is missing: bench the procedural part
        notes.append(f"cells3d left out: {err}")
        return BenchSet(items, notes)
    slices = list(range(0, len(CELLS3D_SLICES), CELLS3D_STEP))[: 1 if quick else None]
    for j in slices:
        z = CELLS3D_SLICES.start + j
        rng = np.random.default_rng([seed, 1, z])
        plane = relative_intensity(region[j])

        def cells3d(rng=rng, z=z, plane=plane):
            config = RANGES.sample(rng, max_pixel_um=CELLS3D_MAX_PIXEL_UM)
            sharp = at_pixel_size(plane, CELLS3D_PIXEL_UM[-1], config.optics.pixel_um, min_side=8)
            return _pair(f"cells3d-z{z:02d}", "cells3d", sharp, config, rng)

        items.append(_first_usable(cells3d))
    return BenchSet(items, notes)


def _usable(item: BenchItem) -> bool:
    """A pair PSNR can score: a camera that saturates everywhere (10 % of setups over-expose, some
    with 8 bits) can record a ground truth of one value, whose range, PSNR's peak, is then zero.
    Training redraws such draws (``data.varied.MIN_SPAN_ADU``); the bench sets do the same."""
    norm = fit_normalization(item.blurred)
    return float(item.sharp.max() - item.sharp.min()) >= MIN_SPAN_ADU and norm.hi - norm.lo >= MIN_SPAN_ADU


def _first_usable(draw) -> BenchItem:
    """The first usable of up to ``MAX_REDRAWS`` draws from the item's own generator, so an item
    that was usable at its first draw is the same as before this rule."""
    for _ in range(MAX_REDRAWS - 1):
        item = draw()
        if _usable(item):
            return item
    return draw()


def _pair(name: str, source: str, sharp_relative, config: SimulationConfig, rng) -> BenchItem:
    pair = simulate_pair(np.asarray(sharp_relative, dtype=np.float32), rng, config)
    arrays = [np.ascontiguousarray(pair[k], dtype=np.float32) for k in ("blurred", "sharp", "depth")]
    for a in arrays:
        a.setflags(write=False)
    return BenchItem(name, *arrays, source=source, config=config)
