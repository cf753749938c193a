"""Defocus point-spread functions from a scalar pupil model.

A widefield objective of numerical aperture NA passes spatial frequencies ``|f| <= NA / λ``; a
point ``z`` µm away from the focal plane adds the propagation phase ``2π z sqrt((n/λ)² − |f|²)``.
The intensity PSF is ``|IFFT(pupil · phase)|²``. Optional pupil aberrations (spherical,
astigmatism, coma; Zernike polynomials, Noll-normalised, in waves RMS) add their phase to the
pupil. The in-focus PSF is smaller than a camera pixel, so we compute it on an
``oversample``-times finer grid and sum the fine samples inside each camera pixel, which is what the
sensor does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "DEFAULT_OPTICS",
    "Optics",
    "defocus_psf",
    "default_psf_size",
    "energy_radius",
    "geometric_radius_px",
]


@dataclass(frozen=True)
class Optics:
    """Imaging system. Defaults are close to BBBC006: 20x/0.45 dry, 0.645 µm pixels, Hoechst.

    The aberration fields are Zernike coefficients in waves RMS (0 = a perfect objective): primary
    spherical (Z11, from a refractive-index mismatch or a wrong coverslip), astigmatism (Z5, Z6) and
    coma (Z7, Z8; a tilted or decentred element). With any of them the PSF is no longer symmetric in
    ±z; the simulator only uses z ≥ 0 (the specimen on one side of focus).
    """

    na: float = 0.45
    wavelength_um: float = 0.46
    pixel_um: float = 0.645
    n_medium: float = 1.0
    oversample: int = 5
    spherical: float = 0.0
    astigmatism: tuple[float, float] = (0.0, 0.0)  # oblique (Z5), vertical (Z6)
    coma: tuple[float, float] = (0.0, 0.0)  # vertical (Z7), horizontal (Z8)

    def __post_init__(self):
        if not 0 < self.na < self.n_medium:
            raise ValueError(f"need 0 < NA < n_medium, got NA={self.na}, n={self.n_medium}")
        if self.oversample < 1 or self.oversample % 2 == 0:
            # An odd factor keeps the optical axis in the middle of the central camera pixel.
            raise ValueError(f"oversample must be a positive odd integer, got {self.oversample}")
        object.__setattr__(self, "astigmatism", tuple(float(a) for a in self.astigmatism))
        object.__setattr__(self, "coma", tuple(float(c) for c in self.coma))
        if len(self.astigmatism) != 2 or len(self.coma) != 2:
            raise ValueError("astigmatism and coma take two coefficients each")

    @property
    def aberrated(self) -> bool:
        return any((self.spherical, *self.astigmatism, *self.coma))

    def aberration_waves(self, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
        """Wavefront error (waves) at pupil frequencies ``fy``, ``fx`` (cycles/µm)."""
        cut = self.na / self.wavelength_um
        rho2 = (fy**2 + fx**2) / cut**2
        rho = np.sqrt(rho2)
        theta = np.arctan2(fy, fx)
        a_obl, a_ver = self.astigmatism
        c_ver, c_hor = self.coma
        radial_coma = np.sqrt(8.0) * (3 * rho2 * rho - 2 * rho)
        return (
            self.spherical * np.sqrt(5.0) * (6 * rho2**2 - 6 * rho2 + 1)
            + np.sqrt(6.0) * rho2 * (a_obl * np.sin(2 * theta) + a_ver * np.cos(2 * theta))
            + radial_coma * (c_ver * np.sin(theta) + c_hor * np.cos(theta))
        )


DEFAULT_OPTICS = Optics()

MAX_HALF = 127  # default PSFs are at most 255 px wide (about 150 µm of defocus at NA 0.45)


def geometric_radius_px(z_um: float, optics: Optics = DEFAULT_OPTICS) -> float:
    """Radius of the geometric-optics blur disc, ``|z| tan(asin(NA / n))``, in camera pixels."""
    tan = optics.na / math.sqrt(optics.n_medium**2 - optics.na**2)
    return abs(z_um) * tan / optics.pixel_um


def default_psf_size(z_um: float, optics: Optics = DEFAULT_OPTICS) -> int:
    """Odd width that holds the blur disc plus its diffraction rim (about 97–99.5 % of the energy)."""
    half = min(math.ceil(1.25 * geometric_radius_px(z_um, optics) + 4), MAX_HALF)
    return 2 * half + 1


def defocus_psf(z_um: float, optics: Optics = DEFAULT_OPTICS, size: int | None = None) -> np.ndarray:
    """Intensity PSF at defocus ``z_um`` (µm), camera-pixel sampled, centred, odd ``size``, sum 1.

    ``|z|`` is used: without aberrations the PSF is symmetric in ±z, with them the simulator keeps
    to z ≥ 0. Results are cached on ``z`` rounded to 1 nm.
    """
    if size is None:
        size = default_psf_size(z_um, optics)
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"PSF size must be a positive odd integer, got {size}")
    return _cached_psf(round(abs(float(z_um)), 3), optics, size).copy()


@lru_cache(maxsize=1024)
def _cached_psf(z_um: float, optics: Optics, size: int) -> np.ndarray:
    psf = _pupil_psf(z_um, optics, size)
    psf = _fit_to_size(psf, size)
    psf /= psf.sum()
    psf.setflags(write=False)
    return psf


def _pupil_psf(z_um: float, optics: Optics, size: int = 1) -> np.ndarray:
    """PSF on an odd camera-pixel grid large enough that wrap-around stays negligible.

    The grid (and so the sampling of the pupil) depends only on ``size`` while the blur disc
    fits, so a family of PSFs of one size varies smoothly with ``z`` (the eigen-PSF basis needs it).
    """
    m = _smooth_odd(max(size + 32, 2 * math.ceil(1.3 * geometric_radius_px(z_um, optics)) + 33))
    ov = optics.oversample
    n = m * ov  # odd, so the zero frequency lands in the centre of the central camera pixel
    f = np.fft.fftfreq(n, optics.pixel_um / ov)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    pupil = f2 <= (optics.na / optics.wavelength_um) ** 2
    # The phase only matters inside the pupil, a small disc of the oversampled grid: evaluate it there.
    kz = np.sqrt(np.maximum((optics.n_medium / optics.wavelength_um) ** 2 - f2[pupil], 0.0))
    phase = z_um * kz
    if optics.aberrated:
        fy, fx = np.broadcast_to(f[:, None], f2.shape)[pupil], np.broadcast_to(f[None, :], f2.shape)[pupil]
        phase = phase + optics.aberration_waves(fy, fx)
    aperture = np.zeros(f2.shape, dtype=np.complex128)
    aperture[pupil] = np.exp(2j * np.pi * phase)
    field = np.fft.ifft2(aperture)
    fine = np.fft.fftshift(np.abs(field) ** 2)
    return fine.reshape(m, ov, m, ov).sum(axis=(1, 3))


def _fit_to_size(psf: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad an odd square array to ``size``."""
    m = psf.shape[0]
    if size <= m:
        start = (m - size) // 2
        return psf[start : start + size, start : start + size].copy()
    pad = (size - m) // 2
    return np.pad(psf, pad)


def _smooth_odd(n: int) -> int:
    """Smallest odd integer >= n whose prime factors are 3, 5 and 7 (fast FFT lengths)."""
    n = max(n, 1)
    n += 1 - n % 2
    while True:
        k = n
        for p in (3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return n
        n += 2


def energy_radius(psf: np.ndarray, fraction: float = 0.8) -> float:
    """Radius (px, from the central pixel) of the smallest disc of pixels holding ``fraction``
    of the PSF's energy; pixels count by their centres, so an in-focus PSF gives about 1."""
    psf = np.asarray(psf, dtype=np.float64)
    cy, cx = (psf.shape[0] - 1) / 2, (psf.shape[1] - 1) / 2
    yy, xx = np.indices(psf.shape)
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r, kind="stable")
    energy = np.cumsum(psf.ravel()[order])
    i = int(np.searchsorted(energy, fraction * energy[-1]))
    return float(r[order][min(i, r.size - 1)])
