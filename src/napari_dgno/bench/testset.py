"""The frozen benchmark images: procedural nuclei + the held-out cells3d slices, blurred once.

Same physics as training (:data:`SIM_CONFIG`), but fixed seeds, so every method sees the very same
pairs. Each image has its own generator (``default_rng([seed, i])``), so the quick set is the first
items of the full set, not a different draw. The tuning set (for the classical methods' settings)
uses another seed and the cells3d *training* slices: nothing is tuned on the test images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from napari_dgno.data.clean_images import cells3d_split, load_cells3d_nuclei, procedural_nuclei
from napari_dgno.physics import DepthConfig, SimulationConfig, relative_intensity, simulate_pair

# The training configs' ``data.max_defocus_um`` (configs/dgno-small-face.yaml); a test keeps them
# equal. A constant rather than a file read: the test set must not move when a config is edited.
MAX_DEFOCUS_UM = 20.0
SIM_CONFIG = SimulationConfig(depth=DepthConfig(max_defocus_um=MAX_DEFOCUS_UM))
SIZE = 256
N_PROCEDURAL = 8
TEST_SEED = 20_260_523
TUNE_SEED = 4_242
N_TUNE_PROCEDURAL = 4
N_TUNE_CELLS3D = 2


@dataclass(frozen=True, eq=False)
class BenchItem:
    """One benchmark pair. Images in camera ADU (float32), depth in µm (what blurred each pixel)."""

    name: str
    blurred: np.ndarray
    sharp: np.ndarray
    depth: np.ndarray


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


def benchmark_set(quick: bool = False) -> BenchSet:
    """8 procedural 256² images + the 6 cells3d test slices (quick: 1 + 1)."""
    return _build(TEST_SEED, 1 if quick else N_PROCEDURAL, "test", 1 if quick else None)


def tuning_set(quick: bool = False) -> BenchSet:
    """4 procedural images + 2 cells3d training slices, another seed (quick: 1 + 1)."""
    n_proc = 1 if quick else N_TUNE_PROCEDURAL
    return _build(TUNE_SEED, n_proc, "train", 1 if quick else N_TUNE_CELLS3D)


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


def _build(seed: int, n_procedural: int, cells3d_split_name: str, n_cells3d: int | None) -> BenchSet:

    items, notes = [], []
    for i in range(n_procedural):
        rng = np.random.default_rng([seed, i])
        sharp = procedural_nuclei((SIZE, SIZE), rng)
        items.append(_pair(f"procedural-{i:02d}", sharp, rng))
    try:
        volume = load_cells3d_nuclei()
    except RuntimeError as err:  # the sample-data wheel is missing: bench the procedural part
        notes.append(f"cells3d slices left out: {err}")
        return BenchSet(items, notes)
    slices = getattr(cells3d_split(), cells3d_split_name)[:n_cells3d]
    for z in slices:
        rng = np.random.default_rng([seed, 1000 + int(z)])
        items.append(_pair(f"cells3d-z{z:02d}", relative_intensity(volume[z]), rng))
    return BenchSet(items, notes)


def _pair(name: str, sharp_relative: np.ndarray, rng: np.random.Generator) -> BenchItem:
    pair = simulate_pair(sharp_relative, rng, SIM_CONFIG)
    arrays = [np.ascontiguousarray(pair[k], dtype=np.float32) for k in ("blurred", "sharp", "depth")]
    for a in arrays:
        a.setflags(write=False)
    return BenchItem(name, *arrays)
