"""Which defocus explains the blur? PSF estimation from a blurred image and its restoration.

DGNO never estimates the PSF explicitly; users still want to *see* where and how strongly the
optics blurred. Given the input ``g`` and the network's output ``h``, we search the simulator's
defocus family for the ``z`` whose PSF best explains ``g ≈ a · (h ⊛ PSF_z) + b``; the affine part
absorbs any intensity scaling. With the eigen-PSF basis, ``h ⊛ PSF_z = Σ_k c_k(z) (h ⊛ E_k)``, so
the image is convolved K times once, and the per-element sums that the fit needs are quadratic forms
in ``c(z)`` of per-element sums of those K images: every z on the grid costs a few small matrix
products, not a pass over the image.

One element alone often cannot tell its defocus: an empty patch of background is explained equally
badly by every PSF. :func:`fit_defocus_map` therefore reports a *confidence* per element (how much
the choice of z matters there) and, with ``smooth`` > 0, picks each element's z from its own fit
curve plus its neighbours', weighted by their confidence: a flat specimen gets a flat map, and
elements without signal take their neighbours' defocus instead of noise.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from napari_dgno.errors import InputError
from napari_dgno.physics.blur import EigenPSFBasis, _fast_len, eigen_psf_basis
from napari_dgno.physics.psf import DEFAULT_OPTICS, Optics, defocus_psf

__all__ = ["DefocusMap", "default_z_grid", "fit_defocus", "fit_defocus_map"]

BASIS_DZ = 0.5  # µm between the PSFs the fit's eigen-basis is built from (the default grid's step)


class DefocusMap(NamedTuple):
    """Per-element fit: ``z_um``, ``residual`` and ``confidence`` are (ny, nx), ``psfs`` (ny, nx, k, k).

    ``confidence`` in [0, 1]: the spread of the element's own fit residual over the z grid (0: every
    defocus explains the element equally, e.g. background only; 1: one z explains it, the others not
    at all). ``residual`` is the element's own unexplained variance fraction at the chosen z.
    """

    z_um: np.ndarray
    psfs: np.ndarray
    residual: np.ndarray
    confidence: np.ndarray | None = None


def default_z_grid(z_max: float = 32.0, step: float = 0.5) -> np.ndarray:
    return np.arange(0.0, z_max + step / 2, step)


def fit_defocus(
    blurred: np.ndarray,
    restored: np.ndarray,
    optics: Optics = DEFAULT_OPTICS,
    z_grid: np.ndarray | None = None,
    size: int | None = None,
) -> tuple[float, np.ndarray, float]:
    """Best defocus for a patch: ``(z_um, psf, residual)``.

    ``residual`` is the unexplained fraction of the blurred patch's variance (0 = perfect fit,
    1 = no better than a constant). The patch's borders are predicted from a reflection of
    ``restored``, so use patches a few PSF radii wide. ``size`` is the returned PSF's width.
    """
    blurred, restored = _check_pair(blurred, restored)
    z_grid, basis = _grid_and_basis(z_grid, optics)
    sums = _element_sums(blurred, restored, basis, z_grid, max(blurred.shape), max(blurred.shape))
    residual = _affine_residual(*sums)[:, 0, 0]
    best = int(np.argmin(residual))
    z = float(z_grid[best])
    return z, defocus_psf(z, optics, size), float(residual[best])


def fit_defocus_map(
    blurred: np.ndarray,
    restored: np.ndarray,
    element_size: int,
    optics: Optics = DEFAULT_OPTICS,
    z_grid: np.ndarray | None = None,
    kernel_size: int = 15,
    smooth: float = 0.0,
) -> DefocusMap:
    """Best defocus per ``element_size``² element (row-major from the top-left corner; the last
    row/column of elements may be partial), with each element's PSF cropped to ``kernel_size``.

    The convolutions run on the whole image, so elements see their real neighbourhood. ``smooth``
    (in elements; 0 = each element on its own) is the width of the Gaussian over which neighbours'
    fit curves, weighted by their confidence, join an element's own (see the module docstring).
    """
    blurred, restored = _check_pair(blurred, restored)
    if int(element_size) < 2:
        raise InputError(f"element size must be at least 2 px, got {element_size}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"kernel size must be a positive odd integer, got {kernel_size}")
    if not smooth >= 0:
        raise InputError(f"smoothing must be 0 or more elements, got {smooth}")
    z_grid, basis = _grid_and_basis(z_grid, optics)
    residual = _affine_residual(*_element_sums(blurred, restored, basis, z_grid, int(element_size)))
    confidence = (residual.max(axis=0) - residual.min(axis=0)).astype(np.float32)
    best = np.argmin(_regularised(residual, confidence, float(smooth)), axis=0)
    z = z_grid[best].astype(np.float32)
    chosen = np.unique(best)  # only the PSFs shown: each costs a pupil-model evaluation
    bank = np.zeros((len(z_grid), kernel_size, kernel_size))
    bank[chosen] = np.stack([defocus_psf(z_grid[i], optics, kernel_size) for i in chosen])
    psfs = bank[best]
    own = np.take_along_axis(residual, best[None], 0)[0]
    return DefocusMap(z, psfs.astype(np.float32), own, confidence)


def _regularised(residual: np.ndarray, confidence: np.ndarray, smooth: float) -> np.ndarray:
    """Each element's fit curve (Z, ny, nx) replaced by the mean of its neighbourhood's curves, over
    a Gaussian of ``smooth`` elements and weighted by each curve's confidence (cost aggregation, as
    in stereo matching). The minimum of a mixture of two curves lies at one of their minima, not in
    between, so a real jump in defocus stays a jump, within about one element."""
    if smooth <= 0 or residual.shape[1] * residual.shape[2] == 1:
        return residual
    from scipy.ndimage import gaussian_filter

    weight = confidence.astype(np.float64) + 1e-6  # all-empty neighbourhoods: a plain mean
    numerator = gaussian_filter(residual * weight[None], (0, smooth, smooth), mode="nearest")
    return numerator / gaussian_filter(weight, smooth, mode="nearest")[None]


def _check_pair(blurred, restored) -> tuple[np.ndarray, np.ndarray]:
    blurred = np.asarray(blurred, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    if blurred.ndim != 2 or blurred.shape != restored.shape:
        raise InputError(
            f"PSF fit needs two 2-D images of one shape, got {blurred.shape} and {restored.shape}"
        )
    if not (np.isfinite(blurred).all() and np.isfinite(restored).all()):
        raise InputError("PSF fit needs finite images (found NaN or inf)")
    return blurred, restored


def _grid_and_basis(z_grid, optics: Optics) -> tuple[np.ndarray, EigenPSFBasis]:
    z_grid = default_z_grid() if z_grid is None else np.abs(np.asarray(z_grid, dtype=np.float64))
    if z_grid.ndim != 1 or z_grid.size == 0:
        raise InputError("z grid must be a non-empty 1-D list of defocus values (µm)")
    # Round the basis range up to whole µm so nearby grids share one cached basis. Sampled every
    # BASIS_DZ µm: the default grid's PSFs are then reproduced exactly, at half the simulator's cost.
    return z_grid, eigen_psf_basis(optics, float(np.ceil(max(z_grid.max(), 1.0))), BASIS_DZ)


def _element_sums(blurred, restored, basis: EigenPSFBasis, z_grid, element_size: int, tile=512):
    """Per-z, per-element sums n, Σp, Σp², Σg, Σg², Σpg of prediction p and blurred g.

    Works in tiles of whole elements (with the PSF radius of real context around each) so memory
    stays at K tile-sized images however large the image is.
    """
    h, w = blurred.shape
    r = basis.radius
    step = element_size * max(1, tile // element_size)
    padded = np.pad(restored, r, mode="reflect")
    coeffs = basis.coefficients_torch(torch.from_numpy(z_grid))  # (K, Z)
    rows = []
    for y in range(0, h, step):
        row = []
        for x in range(0, w, step):
            g = torch.from_numpy(blurred[y : y + step, x : x + step])
            th, tw = g.shape
            context = torch.from_numpy(padded[y : y + th + 2 * r, x : x + tw + 2 * r])
            row.append(_tile_sums(g, _eigen_convolutions(context, basis), coeffs, element_size))
        rows.append(row)
    # Stitch the tiles' element grids back together (each sum is (..., ny, nx)).
    return tuple(
        torch.cat([torch.cat([t[i] for t in row], dim=-1) for row in rows], dim=-2) for i in range(6)
    )


def _eigen_convolutions(context: torch.Tensor, basis: EigenPSFBasis) -> torch.Tensor:
    """``context ⊛ E_k`` on the valid centre (the context has ``radius`` extra px per side)."""
    r = basis.radius
    h, w = context.shape
    shape = (_fast_len(h), _fast_len(w))
    spectrum = torch.fft.rfft2(context, s=shape)
    kernels = torch.zeros((basis.n_components, *shape), dtype=context.dtype)
    kernels[:, : basis.size, : basis.size] = torch.from_numpy(basis.eigen_psfs)
    kernels = torch.roll(kernels, shifts=(-r, -r), dims=(1, 2))
    return torch.fft.irfft2(spectrum * torch.fft.rfft2(kernels), s=shape)[:, r : h - r, r : w - r]


def _tile_sums(g: torch.Tensor, conv: torch.Tensor, coeffs: torch.Tensor, e: int):
    """With p_z = Σ_k c_k(z) conv_k, the sums over z are (quadratic) forms in c(z) of per-element
    sums of conv_k, conv_k·g and conv_k·conv_l, computed once for all z."""
    n = _block_sum(torch.ones_like(g), e)
    sg, sgg = _block_sum(g, e), _block_sum(g * g, e)
    s1 = _block_sum(conv, e)  # (K, ny, nx)
    s1g = _block_sum(conv * g, e)
    k = conv.shape[0]
    s2 = torch.empty((k, k, *n.shape), dtype=conv.dtype)
    for i in range(k):  # symmetric: the upper triangle only
        s2[i, i:] = _block_sum(conv[i] * conv[i:], e)
        s2[i + 1 :, i] = s2[i, i + 1 :]
    sp = torch.einsum("kz,kab->zab", coeffs, s1)
    spg = torch.einsum("kz,kab->zab", coeffs, s1g)
    spp = torch.einsum("kz,klab,lz->zab", coeffs, s2, coeffs)
    return n, sp, spp, sg, sgg, spg


def _block_sum(x: torch.Tensor, e: int) -> torch.Tensor:
    """Sums over e×e blocks of the last two axes from the top-left; partial blocks at the end sum
    what they have."""
    h, w = x.shape[-2:]
    ny, nx = -(-h // e), -(-w // e)
    x = torch.nn.functional.pad(x, (0, nx * e - w, 0, ny * e - h))
    return x.reshape(*x.shape[:-2], ny, e, nx, e).sum(dim=(-3, -1))


def _affine_residual(n, sp, spp, sg, sgg, spg) -> np.ndarray:
    """Least-squares ``g ≈ a p + b`` per z and element: unexplained fraction of var(g).

    A non-positive ``a`` (the "PSF" would invert contrast) counts as no fit at all.
    """
    var_p = spp - sp * sp / n
    var_g = (sgg - sg * sg / n).clamp(min=1e-12)
    cov = spg - sp * sg / n
    explained = torch.where((cov > 0) & (var_p > 1e-12), cov * cov / var_p.clamp(min=1e-12), 0.0)
    return (1.0 - explained / var_g).clamp(0.0, 1.0).numpy()
