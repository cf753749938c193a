"""Datasets of (blurred, sharp) training pairs.

Every dataset yields float32 tensors of shape (1, P, P), both mapped by ONE percentile
normalisation fitted on the *blurred* image: that is what inference does to a user's image, so
training and inference see the same units, and the sharp target is never normalised on its own.
The normalisation is fitted on the whole blurred image where we have one (arrays, folders,
z-stacks), and on the simulated crop for simulated pairs. A user's sharp image stored in other
units than its blurred one (a float reference next to camera frames) is first mapped into the
blurred image's units by an affine map fitted per pair (:mod:`napari_dgno.data.units`).

Item ``i`` of epoch ``e`` is drawn from ``default_rng([seed, e, i])``: deterministic for a seed,
independent of DataLoader workers and order, fresh each epoch after :meth:`set_epoch`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from napari_dgno.data.focus import find_focus_plane
from napari_dgno.data.units import UnitMap, fit_unit_map
from napari_dgno.errors import InputError
from napari_dgno.normalize import Normalization, fit_normalization
from napari_dgno.physics.simulate import SimulationConfig, relative_intensity, simulate_batch

__all__ = [
    "FolderPairs",
    "PairDataset",
    "PairedArrays",
    "SimulatedPairs",
    "ZStackPairs",
    "fixed_validation_set",
]

TIFF_SUFFIXES = (".tif", ".tiff")


class PairDataset(torch.utils.data.Dataset):
    """Base class: random pairs of ``patch``² crops, ``length`` items per epoch."""

    def __init__(self, patch: int = 128, seed: int = 0, augment: bool = True, length: int = 1000):
        if int(patch) < 8:
            raise InputError(f"patch size must be at least 8 px, got {patch}")
        self.patch = int(patch)
        self.seed = int(seed)
        self.augment = augment
        self.length = int(length)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return self.sample(np.random.default_rng([self.seed, self.epoch, int(index)]))

    def set_epoch(self, epoch: int) -> None:
        """Draw different pairs from now on (call once per epoch)."""
        self.epoch = int(epoch)

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def make_batch(self, batch_size: int, rng: np.random.Generator):
        """``batch_size`` fresh pairs as two (B, 1, P, P) tensors."""
        pairs = [self.sample(rng) for _ in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class PairedArrays(PairDataset):
    """Aligned random crops from a blurred and a sharp array: 2-D images or stacks of them
    (any leading axes; Y, X last). Used for napari layer pairs and folders of pairs."""

    def __init__(
        self,
        blurred,
        sharp,
        patch: int = 128,
        seed: int = 0,
        augment: bool = True,
        length: int = 1000,
    ):
        super().__init__(patch, seed, augment, length)
        blurred, sharp = _planes(blurred, "blurred"), _planes(sharp, "sharp")
        if len(blurred) != len(sharp) or any(b.shape != s.shape for b, s in zip(blurred, sharp, strict=True)):
            raise InputError("blurred and sharp images must have the same shape")
        self._set_pairs(blurred, sharp)

    def _set_pairs(self, blurred: list, sharp: list, units: list[UnitMap] | None = None) -> None:
        """``units``: each sharp plane's map into its blurred plane's units (fitted when None)."""
        self.blurred, self.sharp = blurred, sharp
        self.norms = [fit_normalization(b) for b in blurred]
        if units is None:
            units = [
                fit_unit_map(b, s, f"pair {i}") for i, (b, s) in enumerate(zip(blurred, sharp, strict=True))
            ]
        self.units = list(units)
        self.target_norms = [_target_norm(n, u) for n, u in zip(self.norms, self.units, strict=True)]

    def sample(self, rng):
        i = int(rng.integers(len(self.blurred)))
        b, s = _random_crop([self.blurred[i], self.sharp[i]], self.patch, rng)
        if self.augment:
            b, s = random_dihedral([b, s], rng)
        return _normalised(b, s, self.norms[i], self.target_norms[i])


class FolderPairs(PairedArrays):
    """Pairs of TIFF files with the same name in ``blurred_dir`` and ``sharp_dir``."""

    def __init__(
        self,
        blurred_dir,
        sharp_dir,
        patch: int = 128,
        seed: int = 0,
        augment: bool = True,
        length: int = 1000,
    ):
        PairDataset.__init__(self, patch, seed, augment, length)
        import tifffile

        blurred_files, sharp_files = _tiffs(blurred_dir), _tiffs(sharp_dir)
        names = sorted(set(blurred_files) & set(sharp_files))
        if not names:
            raise InputError(f"no TIFF files with matching names in {blurred_dir} and {sharp_dir}")
        self.names = names
        blurred, sharp = [], []
        for name in names:
            b = tifffile.imread(blurred_files[name])
            s = tifffile.imread(sharp_files[name])
            if b.shape != s.shape:
                raise InputError(f"{name}: blurred {b.shape} and sharp {s.shape} differ in shape")
            blurred += _planes(b, name)
            sharp += _planes(s, name)
        self._set_pairs(blurred, sharp)


class ZStackPairs(PairedArrays):
    """BBBC006-style pairs from one z-stack (Z, Y, X): the in-focus plane is the sharp target
    for every other plane ``min_offset ≤ |z − focus| ≤ max_offset``."""

    def __init__(
        self,
        stack,
        focus_index: int | None = None,
        patch: int = 128,
        seed: int = 0,
        max_offset: int | None = None,
        min_offset: int = 1,
        augment: bool = True,
        length: int = 1000,
    ):
        PairDataset.__init__(self, patch, seed, augment, length)
        stack = np.asarray(stack)
        if stack.ndim != 3 or stack.shape[0] < 2:
            raise InputError(f"a z-stack must be (Z, Y, X) with Z ≥ 2, got shape {stack.shape}")
        if focus_index is None:
            focus_index = find_focus_plane(stack)
        if not 0 <= focus_index < stack.shape[0]:
            raise InputError(f"focus index {focus_index} is outside the stack's {stack.shape[0]} planes")
        max_offset = stack.shape[0] if max_offset is None else max_offset
        self.focus_index = int(focus_index)
        self.planes = [z for z in range(stack.shape[0]) if min_offset <= abs(z - focus_index) <= max_offset]
        if not self.planes:
            raise InputError("no planes within the allowed distance from the focus plane")
        target = stack[focus_index].astype(np.float32)
        planes = [stack[z].astype(np.float32) for z in self.planes]
        self._set_pairs(planes, [target] * len(planes), [UnitMap()] * len(planes))  # one stack: one unit


class SimulatedPairs(PairDataset):
    """Fresh simulated pairs from clean images: crop (with context), augment, blur, add noise.

    ``clean_images``: a list of 2-D images or a (N, Y, X) array, in any units; each is mapped to
    relative units (1st → 0, 99.8th percentile → 1) once. Crops carry ``margin`` px of real
    context on each side, so the returned centre is blurred exactly, as inside a large image.
    """

    def __init__(
        self,
        clean_images,
        patch: int = 128,
        sim_config: SimulationConfig | None = None,
        seed: int = 0,
        augment: bool = True,
        length: int = 1000,
    ):
        super().__init__(patch, seed, augment, length)
        self.config = sim_config or SimulationConfig()
        images = clean_images if isinstance(clean_images, (list, tuple)) else [clean_images]
        self.images = [relative_intensity(p) for image in images for p in _planes(image, "clean")]
        if not self.images:
            raise InputError("no clean images to simulate from")

    @property
    def margin(self) -> int:
        return self.config.margin

    def sample(self, rng):
        blurred, sharp = self.make_batch(1, rng)
        return blurred[0], sharp[0]

    def make_batch(self, batch_size: int, rng: np.random.Generator, return_depth: bool = False):
        """Fast path for the training loop: one batched torch simulation for the whole batch.

        Returns (blurred, sharp) as (B, 1, P, P) tensors, plus the depth maps (B, P, P) in µm
        if ``return_depth``.
        """
        size = self.patch + 2 * self.margin
        crops = []
        for _ in range(batch_size):
            image = self.images[int(rng.integers(len(self.images)))]
            (crop,) = _random_crop([image], size, rng)
            crops.append(random_dihedral([crop], rng)[0] if self.augment else crop)
        out = simulate_batch(np.stack(crops), rng, self.config, pad=False)
        blurred, sharp = [], []
        for b, s in zip(out["blurred"].numpy(), out["sharp"].numpy(), strict=True):
            nb, ns = _normalised(b, s, fit_normalization(b))
            blurred.append(nb)
            sharp.append(ns)
        pair = torch.stack(blurred), torch.stack(sharp)
        return (*pair, out["depth"]) if return_depth else pair


def fixed_validation_set(
    dataset_or_sources,
    n: int,
    seed: int = 0,
    patch: int | None = None,
    sim_config: SimulationConfig | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` deterministic (blurred, sharp) pairs as 2-D float32 numpy arrays (P, P).

    Give a :class:`PairDataset` (``patch`` overrides its crop size) or clean images, which are
    simulated with ``sim_config`` (no augmentation). Same arguments → same pairs, always.
    """
    if isinstance(dataset_or_sources, PairDataset):
        dataset = dataset_or_sources
        if patch is not None and patch != dataset.patch:
            dataset = copy.copy(dataset)
            dataset.patch = int(patch)
    else:
        dataset = SimulatedPairs(dataset_or_sources, patch or 128, sim_config, seed=seed, augment=False)
    # One generator per item: the first k pairs of a larger set are the same k pairs.
    pairs = [dataset.sample(np.random.default_rng([seed, i])) for i in range(n)]
    return [(b[0].numpy(), s[0].numpy()) for b, s in pairs]


# -- helpers ------------------------------------------------------------------------------------


def random_dihedral(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flip/90° rotation (one of 8) applied to every array."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = [np.rot90(a, k) for a in arrays]
    return [a[:, ::-1] if flip else a for a in out]


def _random_crop(arrays: list[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``size``² window of each array (reflect-padded first if it is smaller)."""
    h, w = arrays[0].shape
    py, px = max(0, size - h), max(0, size - w)
    if py or px:
        pads = ((py // 2, py - py // 2), (px // 2, px - px // 2))
        arrays = [np.pad(a, pads, mode="reflect") for a in arrays]
        h, w = arrays[0].shape
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return [a[y : y + size, x : x + size] for a in arrays]


def _normalised(
    blurred, sharp, norm: Normalization, target_norm: Normalization | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    b = np.ascontiguousarray(norm.apply(blurred))[None]
    s = np.ascontiguousarray((target_norm or norm).apply(sharp))[None]
    return torch.from_numpy(b), torch.from_numpy(s)


def _target_norm(norm: Normalization, unit: UnitMap) -> Normalization:
    """``norm`` applied after ``unit``, as one map: (a·s + c − lo) / S = (s − (lo − c)/a) / (S/a)."""
    if unit.same_units:
        return norm
    lo = (norm.lo - unit.offset) / unit.scale
    return Normalization(lo, lo + norm.scale / unit.scale, norm.low_percentile, norm.high_percentile)


def _planes(array, name: str) -> list[np.ndarray]:
    """A 2-D image or an nD stack (Y, X last) as a list of 2-D float32 planes."""
    array = np.asarray(array)
    if array.ndim < 2 or min(array.shape[-2:]) < 2:
        raise InputError(f"{name}: need 2-D images (Y, X last), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{name}: need real-valued images, got dtype {array.dtype}")
    return list(array.reshape(-1, *array.shape[-2:]).astype(np.float32))


def _tiffs(directory) -> dict[str, Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory} is not a folder")
    return {
        p.stem: p for p in sorted(directory.iterdir()) if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES
    }
