"""Poisson–Gaussian camera: shot noise on the photons, read noise, offset, gain, bit depth.

Widefield images of nuclei are photon-limited in the dim parts and clip at the converter's range
in the bright ones; a restoration network must learn both from its training pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CameraConfig", "CameraSample", "camera_noise", "noiseless_camera"]


@dataclass(frozen=True)
class CameraConfig:
    """Ranges the simulator draws camera settings from, per image.

    ``peak_photons`` is the expected photon count at a bright in-focus structure (relative
    intensity 1) and is drawn log-uniformly; ``background`` is a diffuse background as a
    fraction of the peak. ``offset_adu`` (uniform), ``gain`` (ADU per electron, log-uniform) and
    ``bits`` (a choice) are fixed numbers or ranges / choices. With ``expose=True`` the gain is
    lowered, as a user sets exposure, so that the expected peak stays below 90 % of the converter's
    range, except in a ``saturation_chance`` fraction of images.
    """

    peak_photons: tuple[float, float] = (100.0, 2000.0)
    background: tuple[float, float] = (0.0, 0.05)
    read_noise_e: tuple[float, float] = (3.0, 10.0)
    offset_adu: float | tuple[float, float] = 100.0
    gain: float | tuple[float, float] = 1.0  # ADU per photo-electron
    bits: int | tuple[int, ...] = 12
    expose: bool = False
    saturation_chance: float = 0.0

    def sample(self, rng: np.random.Generator) -> CameraSample:
        lo, hi = self.peak_photons
        peak = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        background = peak * float(rng.uniform(*self.background))
        read_noise = float(rng.uniform(*self.read_noise_e))
        if isinstance(self.offset_adu, (int, float)) and isinstance(self.gain, (int, float)):
            offset, gain, bits = float(self.offset_adu), float(self.gain), int(self.bits)
        else:  # the varied camera: draws only made by configs that ask for them
            bits = int(rng.choice(self.bits)) if isinstance(self.bits, tuple) else int(self.bits)
            full = 2**bits - 1
            offset = _draw(self.offset_adu, rng, log=False)
            offset = min(offset, 0.1 * full)  # an 8-bit camera has no room for a 500 ADU offset
            gain = _draw(self.gain, rng, log=True)
            if self.expose and rng.random() >= self.saturation_chance:
                gain = min(gain, 0.9 * (full - offset) / max(peak + background, 1e-6))
        return CameraSample(
            peak_photons=peak,
            background_photons=background,
            read_noise_e=read_noise,
            offset_adu=offset,
            gain=gain,
            bits=bits,
        )


def _draw(value, rng: np.random.Generator, log: bool) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    lo, hi = value
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if log else float(rng.uniform(lo, hi))


@dataclass(frozen=True)
class CameraSample:
    """One drawn camera setting."""

    peak_photons: float
    background_photons: float
    read_noise_e: float
    offset_adu: float
    gain: float
    bits: int


def camera_noise(
    expected_photons: np.ndarray,
    rng: np.random.Generator,
    read_noise_e: float = 5.0,
    offset_adu: float = 100.0,
    gain: float = 1.0,
    bits: int = 12,
) -> np.ndarray:
    """A noisy camera frame in ADU (float32, integer-valued, clipped to ``[0, 2**bits − 1]``).

    electrons = Poisson(photons) + Normal(0, read_noise); ADU = round(gain · electrons + offset).
    So the mean is ``gain · photons + offset`` and the variance ``gain² · (photons + read²)``.
    """
    photons = np.clip(np.asarray(expected_photons, dtype=np.float64), 0.0, None)
    electrons = rng.poisson(photons) + rng.normal(0.0, read_noise_e, size=photons.shape)
    adu = np.round(gain * electrons + offset_adu)
    return np.clip(adu, 0, 2**bits - 1).astype(np.float32)


def noiseless_camera(
    expected_photons: np.ndarray, offset_adu: float = 100.0, gain: float = 1.0, bits: int = 12
) -> np.ndarray:
    """What a perfect, noise-free acquisition of ``expected_photons`` reads (float32 ADU)."""
    adu = gain * np.clip(np.asarray(expected_photons, dtype=np.float64), 0.0, None) + offset_adu
    return np.clip(adu, 0, 2**bits - 1).astype(np.float32)
