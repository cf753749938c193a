"""Simulated pairs from many microscopes, every clean source at its true physical scale.

Each item draws one microscope from a fixed bank (:class:`~napari_dgno.physics.microscope.
MicroscopeRanges`; the bank, not the draw, is fixed, so that the costly eigen-PSF bases are built
once per setup), one clean source, and a crop of that source covering the same number of µm as the
simulated camera's crop: cells3d (0.26 µm/px) and skin are resampled to the camera's pixel size,
procedural specimens are drawn at it. Then blur, haze, camera, and one normalisation fitted on the
blurred crop, as :class:`~napari_dgno.data.datasets.SimulatedPairs` does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.transform import resize

from napari_dgno.data.clean_images import CELLS3D_PIXEL_UM, SKIN_PIXEL_UM, cells3d_region, skin_region
from napari_dgno.data.datasets import PairDataset, _normalised, _random_crop, random_dihedral
from napari_dgno.data.procedural import procedural_specimen
from napari_dgno.errors import InputError
from napari_dgno.normalize import fit_normalization
from napari_dgno.physics.microscope import MicroscopeRanges
from napari_dgno.physics.simulate import relative_intensity, simulate_batch

__all__ = [
    "DEFAULT_WEIGHTS",
    "ScaledImages",
    "VariedSimulatedPairs",
    "at_pixel_size",
    "clean_sources",
    "resample",
]

DEFAULT_WEIGHTS = {"cells3d": 0.4, "skin": 0.2, "procedural": 0.4}
SKIN_SCALE_JITTER = (0.7, 1.4)  # skin's pixel size is assumed, so its scale is drawn around it


def resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``shape``: cubic, anti-aliased when it shrinks, clipped at 0 (light is
    never negative), float32. The one way a clean image changes pixel size, in training and tests."""
    shrinking = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    out = resize(image, shape, order=3, anti_aliasing=shrinking, preserve_range=True)
    return np.clip(out, 0.0, None).astype(np.float32)


def at_pixel_size(image: np.ndarray, source_um: float, target_um: float, min_side: int = 1) -> np.ndarray:
    """A 2-D ``image`` sampled at ``source_um`` per pixel, resampled to ``target_um`` per pixel."""
    scale = source_um / target_um
    return resample(image, tuple(max(min_side, round(n * scale)) for n in image.shape))


class ScaledImages:
    """2-D clean images in relative units that share one pixel size (µm)."""

    def __init__(self, images, pixel_um: float, scale_jitter: tuple[float, float] = (1.0, 1.0)):
        self.images = [relative_intensity(p) for p in images]
        self.pixel_um = float(pixel_um)
        self.scale_jitter = scale_jitter
        if not self.images:
            raise InputError("no clean images in a source")

    def crop(self, size: int, pixel_um: float, rng: np.random.Generator) -> np.ndarray:
        """A ``size``² crop at ``pixel_um`` covering the same µm of one random image."""
        image = self.images[int(rng.integers(len(self.images)))]
        source_px = self.pixel_um * rng.uniform(*self.scale_jitter)
        need = max(2, math.ceil(size * pixel_um / source_px))
        (crop,) = _random_crop([image], need, rng)
        return crop if need == size else resample(crop, (size, size))


def clean_sources(split: str) -> dict:
    """The real clean sources of one split: cells3d's lateral region and (train/validation) skin."""
    sources = {"cells3d": ScaledImages(list(cells3d_region(split)), CELLS3D_PIXEL_UM[-1])}
    if split != "test":
        sources["skin"] = ScaledImages(list(skin_region(split)), SKIN_PIXEL_UM, SKIN_SCALE_JITTER)
    return sources


# A patch whose 1st and 99.8th percentiles lie within one ADU (saturated all over, or blank under an
# 8-bit camera) holds nothing to restore, and normalised by that near-zero span its target reached
# 1e5: 0.15 % of draws, a loss spike of 1e2-1e4 every ~40 batches of 16. Such a draw is redrawn.
MIN_SPAN_ADU = 1.0
MAX_REDRAWS = 20


class VariedSimulatedPairs(PairDataset):
    """Pairs from a bank of ``microscopes`` random setups and weighted clean sources.

    ``split`` picks the cells3d / skin regions; ``bank_seed`` the microscopes (validation and test
    use their own seeds, so their setups are never seen in training); ``weights`` the chance of
    each source (``procedural`` is drawn fresh at the camera's pixel size).
    """

    def __init__(
        self,
        split: str = "train",
        patch: int = 128,
        microscopes: int = 48,
        bank_seed=0,
        weights: dict | None = None,
        ranges: MicroscopeRanges | None = None,
        seed: int = 0,
        augment: bool = True,
        length: int = 1000,
    ):
        super().__init__(patch, seed, augment, length)
        self.split = split
        self.ranges = ranges or MicroscopeRanges()
        self.bank = self.ranges.bank(int(microscopes), bank_seed)
        self.sources = clean_sources(split)
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = sorted(set(weights) - set(self.sources) - {"procedural"})
        if unknown:
            raise InputError(f"unknown clean sources {unknown}: use {sorted(self.sources)} or procedural")
        self.names = [k for k, v in weights.items() if v > 0]
        total = sum(weights[k] for k in self.names)
        self.probabilities = np.array([weights[k] / total for k in self.names])

    def sample(self, rng):
        blurred, sharp = self.make_batch(1, rng)
        return blurred[0], sharp[0]

    def _draw(self, rng: np.random.Generator):
        """One simulated (blurred, sharp, depth) in camera units, before normalisation."""
        config = self.bank[int(rng.integers(len(self.bank)))]
        size = self.patch + 2 * config.margin
        name = self.names[int(rng.choice(len(self.names), p=self.probabilities))]
        pixel = config.optics.pixel_um
        if name == "procedural":
            clean = procedural_specimen((size, size), pixel, rng)
        else:
            clean = self.sources[name].crop(size, pixel, rng)
        if self.augment:
            clean = random_dihedral([clean], rng)[0]
        out = simulate_batch(np.ascontiguousarray(clean)[None], rng, config, pad=False)
        return out["blurred"][0].numpy(), out["sharp"][0].numpy(), out["depth"][0]

    def make_batch(self, batch_size: int, rng: np.random.Generator, return_depth: bool = False):
        blurred, sharp, depths = [], [], []
        for _ in range(batch_size):
            for _attempt in range(MAX_REDRAWS):
                b, s, depth = self._draw(rng)
                norm = fit_normalization(b)
                if norm.hi - norm.lo >= MIN_SPAN_ADU:
                    break
            nb, ns = _normalised(b, s, norm)
            blurred.append(nb)
            sharp.append(ns)
            depths.append(depth)
        pair = torch.stack(blurred), torch.stack(sharp)
        return (*pair, torch.stack(depths)) if return_depth else pair
