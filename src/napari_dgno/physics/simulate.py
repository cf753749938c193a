"""Training pairs from sharp images: depth map → scatter blur → camera.

The sharp input is in *relative* units (background ≈ 0, bright structures ≈ 1; see
:func:`relative_intensity`). Both outputs are in camera ADU: ``blurred`` is a noisy, defocused
acquisition and ``sharp`` is what a perfect in-focus acquisition of the same specimen with the same
camera would read without noise, so the network learns deblurring *and* denoising in the units it
will meet at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from napari_dgno.physics.blur import EigenPSFBasis, eigen_psf_basis, scatter_blur_torch
from napari_dgno.physics.depth import DepthConfig, random_depth_map
from napari_dgno.physics.filters import gaussian_blur
from napari_dgno.physics.noise import CameraConfig, camera_noise, noiseless_camera
from napari_dgno.physics.psf import Optics

__all__ = ["SimulationConfig", "relative_intensity", "simulate_batch", "simulate_pair"]


@dataclass(frozen=True)
class SimulationConfig:
    """Everything the simulator draws from. The largest defocus lives in ``depth``."""

    optics: Optics = field(default_factory=Optics)
    depth: DepthConfig = field(default_factory=DepthConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    basis_dz_um: float = 0.25
    basis_tol: float = 1e-3
    # Out-of-focus haze: light from planes far outside the depth range, a very smooth copy of the
    # specimen (Gaussian, ``haze_sigma_px``) at a fraction ``haze`` of the peak; it is in both the
    # blurred and the sharp image, like the background, because no in-focus acquisition is free of it.
    haze: tuple[float, float] = (0.0, 0.0)
    haze_sigma_px: tuple[float, float] = (20.0, 60.0)

    @property
    def max_defocus_um(self) -> float:
        return self.depth.max_defocus_um

    def basis(self) -> EigenPSFBasis:
        """The (cached) eigen-PSF basis covering ``[0, max_defocus_um]``."""
        return eigen_psf_basis(
            self.optics, float(self.max_defocus_um), self.basis_dz_um, None, self.basis_tol
        )

    @property
    def margin(self) -> int:
        """PSF radius in px: the context a crop needs on each side for an exact blur."""
        return self.basis().radius


def relative_intensity(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map an image in arbitrary units to relative units: ``low`` percentile → 0, ``high`` → 1.

    Values below 0 are clipped (they would be negative photons); bright outliers stay above 1.
    """
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / max(float(hi - lo), 1e-12), 0.0, None).astype(np.float32)


def simulate_batch(
    sharp,
    rng: np.random.Generator,
    config: SimulationConfig | None = None,
    pad: bool = True,
    depth=None,
) -> dict:
    """Simulate a batch: ``sharp`` (B, H, W) in relative units, numpy or torch.

    ``pad=True`` keeps the shape (borders reflect-padded); ``pad=False`` treats the outer
    ``config.margin`` px as context only and returns the valid centre. ``depth`` (B, H, W, µm)
    replaces the random depth maps. Returns float32 tensors ``blurred``, ``sharp`` (ADU) and
    ``depth`` (µm), all the output shape, and ``camera``: the drawn settings per image.
    """
    config = config or SimulationConfig()
    basis = config.basis()
    sharp = torch.as_tensor(np.asarray(sharp, dtype=np.float32))
    if sharp.ndim != 3:
        raise ValueError(f"simulate_batch expects (B, H, W), got shape {tuple(sharp.shape)}")
    b, h, w = sharp.shape
    if depth is None:
        depth = np.stack([random_depth_map((h, w), rng, config.depth) for _ in range(b)])
    depth = torch.as_tensor(np.asarray(depth, dtype=np.float32))
    cameras = [config.camera.sample(rng) for _ in range(b)]
    peak = torch.tensor([c.peak_photons for c in cameras], dtype=torch.float32)[:, None, None]

    photons = sharp.clamp(min=0) * peak
    blurred = scatter_blur_torch(photons, depth, basis, pad=pad).clamp(min=0).numpy()
    if not pad:
        r = basis.radius
        photons, depth = photons[:, r : h - r, r : w - r], depth[:, r : h - r, r : w - r]
    photons = photons.numpy()
    if config.haze[1] > 0:
        for i in range(b):
            frac, sigma = rng.uniform(*config.haze), rng.uniform(*config.haze_sigma_px)
            glow = gaussian_blur(photons[i], sigma, mode="reflect")
            glow *= frac * cameras[i].peak_photons / max(float(glow.max()), 1e-12)
            blurred[i] += glow.astype(np.float32)
            photons[i] = photons[i] + glow.astype(np.float32)

    noisy = np.empty(blurred.shape, dtype=np.float32)
    clean = np.empty(blurred.shape, dtype=np.float32)
    for i, cam in enumerate(cameras):
        bg = cam.background_photons
        noisy[i] = camera_noise(blurred[i] + bg, rng, cam.read_noise_e, cam.offset_adu, cam.gain, cam.bits)
        clean[i] = noiseless_camera(photons[i] + bg, cam.offset_adu, cam.gain, cam.bits)
    return {
        "blurred": torch.from_numpy(noisy),
        "sharp": torch.from_numpy(clean),
        "depth": depth.contiguous(),
        "camera": cameras,
    }


def simulate_pair(
    sharp: np.ndarray, rng: np.random.Generator, config: SimulationConfig | None = None, depth=None
) -> dict:
    """One pair from a 2-D sharp image in relative units (see :func:`relative_intensity`).

    Returns numpy float32 ``blurred`` and ``sharp`` (camera ADU), ``depth`` (µm), all the input's
    shape, and the drawn ``camera`` settings.
    """
    sharp = np.asarray(sharp, dtype=np.float32)
    if sharp.ndim != 2:
        raise ValueError(f"simulate_pair expects a 2-D image, got shape {sharp.shape}")
    out = simulate_batch(sharp[None], rng, config, pad=True, depth=None if depth is None else [depth])
    return {
        "blurred": out["blurred"][0].numpy(),
        "sharp": out["sharp"][0].numpy(),
        "depth": out["depth"][0].numpy(),
        "camera": out["camera"][0],
    }
