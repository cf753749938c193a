"""Random widefield microscopes: the parts of a setup that differ between labs, drawn per sample.

One objective and one camera teach a network one PSF family and one noise model; a user's
microscope is different. :class:`MicroscopeRanges` holds plausible ranges for everything that
changes the pairs a network sees, and :meth:`MicroscopeRanges.sample` draws one setup as a
:class:`~napari_dgno.physics.simulate.SimulationConfig`. The ranges, and why:

- **Objective** from a list of common ones (10x/0.3 dry to 100x/1.45 oil) and a **camera** pixel
  (sCMOS 6.5 µm, CCD 6.45 / 4.54 / 3.45 µm, EMCCD 13 / 16 µm) with binning 1 or 2: the object
  pixel is camera pixel x binning / magnification, kept within 0.1–1.0 µm (coarser than 1 µm no
  cell image is taken with; finer than 0.1 µm the content sources have no detail left).
- **Emission** 0.42–0.62 µm: Hoechst/DAPI to mCherry.
- **Aberrations** (waves RMS, Zernike): spherical ±0.25 in 60 % of setups (refractive-index
  mismatch, coverslip thickness; 0.07 is Maréchal's "diffraction-limited"), astigmatism and coma
  with a 0.05 standard deviation each (alignment, tilted elements).
- **Defocus** range: the depth that gives a geometric blur radius of 6–20 px on this setup, so
  blur is judged in pixels (what the network sees) whatever the optics.
- **Camera**: peak 20–5,000 photons (log-uniform: very dim to bright), background 0–20 % of the
  peak plus out-of-focus haze 0–30 %, read noise 1–12 e⁻, gain 0.25–4 ADU/e⁻ (log-uniform)
  lowered to fit the converter as a user sets exposure (10 % of images saturate), offset 0–500
  ADU, 8, 12 or 16 bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from napari_dgno.physics.depth import DepthConfig
from napari_dgno.physics.noise import CameraConfig
from napari_dgno.physics.psf import Optics
from napari_dgno.physics.simulate import SimulationConfig

__all__ = ["OBJECTIVES", "MicroscopeRanges", "geometric_depth_um"]

# (magnification, NA, refractive index of the immersion medium)
OBJECTIVES = (
    (10, 0.30, 1.0),
    (10, 0.45, 1.0),
    (20, 0.45, 1.0),
    (20, 0.75, 1.0),
    (20, 0.80, 1.0),
    (40, 0.75, 1.0),
    (40, 0.95, 1.0),
    (40, 1.30, 1.515),
    (60, 1.20, 1.333),
    (60, 1.40, 1.515),
    (63, 1.40, 1.515),
    (100, 1.40, 1.515),
    (100, 1.45, 1.515),
)
CAMERA_PIXELS_UM = (6.5, 6.45, 4.54, 3.45, 13.0, 16.0)
BASIS_SAMPLES = 64  # PSFs per eigen-PSF basis: a radius step of about 0.3 px at most


def geometric_depth_um(radius_px: float, optics: Optics) -> float:
    """Defocus (µm) whose geometric blur disc has ``radius_px`` camera pixels on ``optics``."""
    tan = optics.na / math.sqrt(optics.n_medium**2 - optics.na**2)
    return radius_px * optics.pixel_um / tan


@dataclass(frozen=True)
class MicroscopeRanges:
    """What :meth:`sample` draws from (see the module docstring for why)."""

    objectives: tuple = OBJECTIVES
    camera_pixels_um: tuple = CAMERA_PIXELS_UM
    binning: tuple = (1, 1, 1, 2)
    pixel_um: tuple[float, float] = (0.1, 1.0)
    wavelength_um: tuple[float, float] = (0.42, 0.62)
    spherical: float = 0.25
    spherical_chance: float = 0.6
    astigmatism_sd: float = 0.05
    coma_sd: float = 0.05
    blur_radius_px: tuple[float, float] = (6.0, 20.0)
    camera: CameraConfig = CameraConfig(
        peak_photons=(20.0, 5000.0),
        background=(0.0, 0.2),
        read_noise_e=(1.0, 12.0),
        offset_adu=(0.0, 500.0),
        gain=(0.25, 4.0),
        bits=(8, 12, 12, 16, 16),
        expose=True,
        saturation_chance=0.1,
    )
    haze: tuple[float, float] = (0.0, 0.3)

    def sample(self, rng: np.random.Generator, max_pixel_um: float | None = None) -> SimulationConfig:
        """One random setup. ``max_pixel_um`` caps the object pixel (small sources need fine pixels)."""
        top = self.pixel_um[1] if max_pixel_um is None else min(self.pixel_um[1], max_pixel_um)
        for _ in range(1000):
            mag, na, n = self.objectives[int(rng.integers(len(self.objectives)))]
            cam = self.camera_pixels_um[int(rng.integers(len(self.camera_pixels_um)))]
            binning = self.binning[int(rng.integers(len(self.binning)))]
            pixel = cam * binning / mag
            if self.pixel_um[0] <= pixel <= top:
                break
        else:
            raise ValueError(f"no objective and camera give a pixel in [{self.pixel_um[0]}, {top}] µm")
        spherical = (
            rng.uniform(-self.spherical, self.spherical) if rng.random() < self.spherical_chance else 0.0
        )
        optics = Optics(
            na=na,
            wavelength_um=round(float(rng.uniform(*self.wavelength_um)), 3),
            pixel_um=round(pixel, 4),
            n_medium=n,
            spherical=round(float(spherical), 3),
            astigmatism=tuple(np.round(rng.normal(0.0, self.astigmatism_sd, 2), 3)),
            coma=tuple(np.round(rng.normal(0.0, self.coma_sd, 2), 3)),
        )
        z_max = geometric_depth_um(float(rng.uniform(*self.blur_radius_px)), optics)
        depth = DepthConfig(max_defocus_um=round(z_max, 3), min_scale_um=round(0.2 * z_max, 3))
        return SimulationConfig(
            optics=optics,
            depth=depth,
            camera=self.camera,
            basis_dz_um=depth.max_defocus_um / BASIS_SAMPLES,
            haze=self.haze,
        )

    def bank(self, n: int, seed, max_pixel_um: float | None = None) -> list[SimulationConfig]:
        """``n`` setups from ``default_rng(seed)``: a run's (or a test set's) fixed microscopes."""
        rng = np.random.default_rng(seed)
        return [self.sample(rng, max_pixel_um) for _ in range(n)]
