"""Spatially varying defocus blur by "scatter" synthesis.

Every emitter ξ of the sharp image h spreads its light with the PSF of its own depth:
``g(x) = Σ_ξ h(ξ) · PSF_{z(ξ)}(x − ξ)``. This is the physically right model at depth jumps
(a "gather" model, which blurs each *output* pixel with one PSF, is not).

The defocus PSF family is low-rank: ``PSF_z ≈ Σ_k c_k(z) · E_k`` with a few eigen-PSFs ``E_k``
(an SVD of PSFs sampled in z; the family is band-limited in z, so ~12 components hold 0–20 µm and
~18 hold 0–32 µm to 1e-3). Then ``g = Σ_k (h · c_k(z)) ⊛ E_k``: K FFT convolutions instead of one
PSF per pixel, and all K spectra are summed before a single inverse FFT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from napari_dgno.physics.psf import DEFAULT_OPTICS, Optics, default_psf_size, defocus_psf

__all__ = [
    "EigenPSFBasis",
    "eigen_psf_basis",
    "reflect_pad",
    "scatter_blur",
    "scatter_blur_direct",
    "scatter_blur_torch",
]

TABLE_REFINE = 8  # coefficient table is resampled 8x finer than the PSF z grid, then read linearly


@dataclass(frozen=True, eq=False)
class EigenPSFBasis:
    """Low-rank model of ``defocus_psf(z, optics, size)`` for ``z`` in ``[0, z_max]``."""

    optics: Optics
    z_max: float
    size: int
    eigen_psfs: np.ndarray  # (K, size, size) float64, orthonormal
    table_step: float  # µm between rows of ``table``
    table: np.ndarray  # (n_z, K) coefficients c_k(z) on a uniform z grid from 0
    max_error: float  # worst relative L2 error of the sampled family's reconstruction
    _spectra: dict = field(default_factory=dict, repr=False)

    @property
    def n_components(self) -> int:
        return self.eigen_psfs.shape[0]

    @property
    def radius(self) -> int:
        return self.size // 2

    @classmethod
    def build(
        cls,
        optics: Optics = DEFAULT_OPTICS,
        z_max: float = 32.0,
        dz: float = 0.25,
        n_components: int | None = None,
        tol: float = 1e-3,
        size: int | None = None,
    ) -> EigenPSFBasis:
        """SVD of PSFs at ``0, dz, …, z_max``; ``n_components=None`` keeps the fewest that
        reconstruct every sampled PSF to relative L2 error ``tol``."""
        size = default_psf_size(z_max, optics) if size is None else int(size)
        z = np.linspace(0.0, z_max, int(np.ceil(z_max / dz)) + 1)
        family = np.stack([defocus_psf(zi, optics, size).ravel() for zi in z])
        u, s, vt = np.linalg.svd(family, full_matrices=False)
        norms = np.linalg.norm(family, axis=1)
        errors = []
        for k in range(1, len(s) + 1):
            recon = (u[:, :k] * s[:k]) @ vt[:k]
            errors.append(float(np.max(np.linalg.norm(family - recon, axis=1) / norms)))
            if n_components is None and errors[-1] <= tol:
                break
            if n_components is not None and k == n_components:
                break
        k = len(errors)
        # c_k(z) is smooth (band-limited in z): a cubic spline resample makes linear reads exact.
        coeffs = u[:, :k] * s[:k]
        step = (z[1] - z[0]) / TABLE_REFINE if len(z) > 1 else 1.0
        fine_z = np.arange(0.0, z_max + step / 2, step)
        table = CubicSpline(z, coeffs, axis=0)(fine_z) if len(z) > 3 else coeffs
        return cls(optics, float(z_max), size, vt[:k].reshape(k, size, size), step, table, errors[-1])

    def coefficients(self, depth: np.ndarray) -> np.ndarray:
        """``c_k(depth)`` as an array of shape ``(K, *depth.shape)``."""
        t = torch.from_numpy(np.asarray(depth, dtype=np.float64))
        return self.coefficients_torch(t).numpy()

    def coefficients_torch(self, depth: torch.Tensor) -> torch.Tensor:
        """``c_k(depth)`` as a tensor ``(K, *depth.shape)``; see :meth:`lookup`."""
        index, weight = self.lookup(depth)
        return torch.stack([self.coefficient(k, index, weight) for k in range(self.n_components)])

    def lookup(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat table rows and linear weights for ``depth`` (folded to ``|z|``, clipped to z_max).

        Computed once per batch and shared by all components: the reads dominate synthesis time.
        """
        pos = (depth.abs().clamp(max=self.z_max) / self.table_step).reshape(-1)
        index = pos.floor().long().clamp(0, max(len(self.table) - 2, 0))
        return index, (pos - index).clamp(0, 1).reshape(depth.shape)

    def coefficient(self, k: int, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``c_k`` at rows ``index`` (+ ``weight`` of the next row), shaped like ``weight``."""
        col = torch.as_tensor(self.table[:, k], dtype=weight.dtype)
        if len(col) == 1:
            return col.expand(weight.shape)
        lo = col.index_select(0, index).reshape(weight.shape)
        hi = col.index_select(0, index + 1).reshape(weight.shape)
        return torch.lerp(lo, hi, weight)

    def psf(self, z_um: float) -> np.ndarray:
        """The basis' reconstruction of ``PSF_z`` (for checks and displays)."""
        c = self.coefficients(np.array([z_um]))[:, 0]
        return np.tensordot(c, self.eigen_psfs, axes=1)

    def spectra(self, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """rfft2 of the eigen-PSFs, centred at pixel (0, 0), for FFT size ``shape`` (cached)."""
        key = (tuple(shape), dtype)
        if key not in self._spectra:
            if len(self._spectra) >= 8:  # a training run uses one or two shapes
                self._spectra.clear()
            r = self.radius
            kernels = torch.zeros((self.n_components, *shape), dtype=dtype)
            kernels[:, : self.size, : self.size] = torch.as_tensor(self.eigen_psfs, dtype=dtype)
            kernels = torch.roll(kernels, shifts=(-r, -r), dims=(-2, -1))
            self._spectra[key] = torch.fft.rfft2(kernels)
        return self._spectra[key]


@lru_cache(maxsize=128)  # a training run's bank of random microscopes (physics/microscope.py)
def eigen_psf_basis(
    optics: Optics = DEFAULT_OPTICS,
    z_max: float = 32.0,
    dz: float = 0.25,
    n_components: int | None = None,
    tol: float = 1e-3,
) -> EigenPSFBasis:
    """Cached :meth:`EigenPSFBasis.build` (building takes about a second)."""
    return EigenPSFBasis.build(optics, z_max, dz, n_components, tol)


def scatter_blur_torch(
    sharp: torch.Tensor, depth: torch.Tensor, basis: EigenPSFBasis, pad: bool = True
) -> torch.Tensor:
    """Batched low-rank scatter blur of ``sharp`` (B, H, W) with per-pixel ``depth`` (µm).

    ``pad=True`` reflect-pads by the PSF radius so borders are not dark and returns (B, H, W);
    ``pad=False`` uses the real surroundings instead and returns the valid centre (B, H−2r, W−2r).
    """
    r = basis.radius
    if pad:
        sharp, depth = reflect_pad(sharp, r), reflect_pad(depth, r)
    h, w = sharp.shape[-2:]
    if h <= 2 * r or w <= 2 * r:
        raise ValueError(f"image {h}x{w} is too small for a PSF of radius {r} without padding")
    # A circular convolution of size (h, w) is exact on the centre: wrap-around only reaches r px.
    shape = (_fast_len(h), _fast_len(w))
    spectra = basis.spectra(shape, sharp.dtype)
    index, weight = basis.lookup(depth)
    total = None
    for k in range(basis.n_components):
        coeff = basis.coefficient(k, index, weight)
        term = torch.fft.rfft2(sharp * coeff, s=shape) * spectra[k]
        total = term if total is None else total + term
    out = torch.fft.irfft2(total, s=shape)
    return out[..., r : h - r, r : w - r]


def scatter_blur(
    sharp: np.ndarray, depth: np.ndarray, basis: EigenPSFBasis, pad: bool = True, dtype=np.float32
) -> np.ndarray:
    """Numpy front end of :func:`scatter_blur_torch` for one image (H, W) or a stack (N, H, W)."""
    sharp = np.asarray(sharp)
    if sharp.shape != np.shape(depth):
        raise ValueError(f"sharp {sharp.shape} and depth {np.shape(depth)} differ in shape")
    single = sharp.ndim == 2
    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    s = torch.as_tensor(np.asarray(sharp, dtype=dtype)).to(tdtype)
    d = torch.as_tensor(np.asarray(depth, dtype=dtype)).to(tdtype)
    if single:
        s, d = s[None], d[None]
    out = scatter_blur_torch(s, d, basis, pad=pad).numpy().astype(dtype, copy=False)
    return out[0] if single else out


def scatter_blur_direct(
    sharp: np.ndarray, depth: np.ndarray, optics: Optics = DEFAULT_OPTICS, size: int | None = None
) -> np.ndarray:
    """Exact scatter blur, one PSF per pixel (slow; a reference for tests on small images).

    Same boundary handling as :func:`scatter_blur` with ``pad=True``: the image and depth map are
    reflect-padded by the PSF radius, and the padded emitters shine into the image too.
    """
    sharp = np.asarray(sharp, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    size = default_psf_size(float(np.max(np.abs(depth))), optics) if size is None else size
    r = size // 2
    hp = np.pad(sharp, r, mode="reflect")
    zp = np.pad(depth, r, mode="reflect")
    out = np.zeros((hp.shape[0] + 2 * r, hp.shape[1] + 2 * r))
    for (i, j), value in np.ndenumerate(hp):
        if value != 0:
            out[i : i + size, j : j + size] += value * defocus_psf(zp[i, j], optics, size)
    h, w = sharp.shape
    return out[2 * r : 2 * r + h, 2 * r : 2 * r + w]


def reflect_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Reflect-pad the last two dims by ``r`` (like ``np.pad(mode="reflect")``, any ``r``)."""
    for dim in (-2, -1):
        n = x.shape[dim]
        idx = torch.arange(-r, n + r).abs()
        if n > 1:
            period = 2 * (n - 1)
            idx = idx % period
            idx = torch.where(idx > n - 1, period - idx, idx)
        else:
            idx = torch.zeros_like(idx)
        x = x.index_select(dim, idx)
    return x


def _fast_len(n: int) -> int:
    """Smallest m >= n with prime factors 2, 3, 5 and 7 only (fast FFT lengths)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1
