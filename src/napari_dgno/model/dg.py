"""The Discontinuous Galerkin operator layer: element-local volume operators plus interface fluxes.

Per element e and head: K_e = LN(k)ᵀ LN(v) / n_e (Galerkin-type, softmax-free attention restricted to
the element). Fluxes act on these operators, not on features: every face between two neighbouring
elements contributes +F to the element on its left (top) and −F to the one on its right (bottom), so
the flux sums to zero over the domain and is zero across the border (Neumann). Then out = q · K_final.

Flux variants: ``p0dg`` builds F from the two elements' volume operators; ``face`` builds it from face
operators computed from each element's boundary row / column of tokens; ``none`` leaves elements
independent. Flux modes: ``jump`` F = −τ (K_R − K_L) (interior elements receive −τ × the discrete
Laplacian of the operator field) and ``central`` F = τ (K_L + K_R) / 2 (a central difference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import GatedFFN, LayerNorm2d
from .elements import element_tokens, from_elements, to_elements


def galerkin_operator(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """kᵀ v / n over the token axis: (..., n, d) x (..., n, d) -> (..., d, d)."""
    return k.transpose(-1, -2) @ v / k.shape[-2]


def face_operators(k: torch.Tensor, v: torch.Tensor, rows: int, cols: int) -> dict[str, torch.Tensor]:
    """Operators of each element's four boundary lines of tokens (left, right, top, bottom)."""
    shape = k.shape[:-2] + (rows, cols, k.shape[-1])
    k, v = k.reshape(shape), v.reshape(shape)
    lines = {
        "left": (slice(None), 0),
        "right": (slice(None), cols - 1),
        "top": (0, slice(None)),
        "bottom": (rows - 1, slice(None)),
    }
    return {name: galerkin_operator(k[..., r, c, :], v[..., r, c, :]) for name, (r, c) in lines.items()}


def numerical_flux(left: torch.Tensor, right: torch.Tensor, tau: torch.Tensor, mode: str):
    """The flux F through a face, given the operators on its two sides."""
    if mode == "jump":
        return -tau * (right - left)
    if mode == "central":
        return tau * (left + right) / 2
    raise ValueError(f"unknown flux mode {mode!r}")


def flux_field(
    volume: torch.Tensor,
    faces: dict[str, torch.Tensor] | None,
    tau: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Σ over each element's faces of ±F, for operators laid out as (..., nh, nw, d, d).

    With ``faces`` None the P0DG flux uses the volume operators on both sides of every face.
    """
    if faces is None:
        faces = {"left": volume, "right": volume, "top": volume, "bottom": volume}
    # Vertical faces between columns j and j+1: left side is element j's right line.
    fx = numerical_flux(faces["right"][..., :, :-1, :, :], faces["left"][..., :, 1:, :, :], tau, mode)
    # Horizontal faces between rows i and i+1: top side is element i's bottom line.
    fy = numerical_flux(faces["bottom"][..., :-1, :, :, :], faces["top"][..., 1:, :, :, :], tau, mode)
    zero = (0, 0, 0, 0)
    total = F.pad(fx, zero + (0, 1)) - F.pad(fx, zero + (1, 0))
    total = total + F.pad(fy, zero + (0, 0, 0, 1)) - F.pad(fy, zero + (0, 0, 1, 0))
    return total


class HeadNorm(nn.Module):
    """LayerNorm over each head's features, with its own affine weights per head."""

    def __init__(self, heads: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, dim))
        self.bias = nn.Parameter(torch.zeros(heads, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, heads, ..., d)
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        view = (1, x.shape[1]) + (1,) * (x.ndim - 3) + (x.shape[-1],)
        return x * self.weight.view(view) + self.bias.view(view)


class ElementAttention(nn.Module):
    """q · K_final for every element: the volume operator plus the interface flux."""

    def __init__(
        self,
        channels: int,
        heads: int,
        flux: str = "face",
        flux_mode: str = "jump",
        tau_init: float = 0.25,
    ):
        super().__init__()
        self.heads, self.head_dim = heads, channels // heads
        self.flux, self.flux_mode = flux, flux_mode
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.k_norm = HeadNorm(heads, self.head_dim)
        self.v_norm = HeadNorm(heads, self.head_dim)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        self.proj = nn.Conv2d(channels, channels, 1)

    def operators(self, x: torch.Tensor, element_size: int, level: int, flux: str | None = None):
        """(q, K_volume, K_flux, block) in element layout; exposed for tests and kernel overlays."""
        b, c, h, w = x.shape
        rows, cols = element_tokens(element_size, level, h, w)
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, self.head_dim, h, w).unbind(1)
        q, k, v = (to_elements(t, rows, cols) for t in (q, k, v))
        k, v = self.k_norm(k), self.v_norm(v)
        volume = galerkin_operator(k, v)
        flux = self.flux if flux is None else flux
        if flux == "none":
            flux_term = torch.zeros_like(volume)
        elif flux == "p0dg":
            flux_term = flux_field(volume, None, self.tau, self.flux_mode)
        elif flux == "face":
            flux_term = flux_field(volume, face_operators(k, v, rows, cols), self.tau, self.flux_mode)
        else:
            raise ValueError(f"unknown flux variant {flux!r}")
        return q, volume, flux_term, (rows, cols)

    def forward(self, x, element_size: int, level: int, flux: str | None = None):
        b, c, h, w = x.shape
        q, volume, flux_term, (rows, cols) = self.operators(x, element_size, level, flux)
        out = from_elements(q @ (volume + flux_term), rows, cols).reshape(b, c, h, w)
        return self.proj(out)


class DGLayer(nn.Module):
    """x + A(x), then + FFN: the DG operator layer of the decoder."""

    def __init__(
        self,
        channels: int,
        heads: int,
        flux: str,
        flux_mode: str,
        tau_init: float,
        ffn_expand: float = 2.0,
    ):
        super().__init__()
        self.attention = ElementAttention(channels, heads, flux, flux_mode, tau_init)
        self.norm = LayerNorm2d(channels)
        self.ffn = GatedFFN(channels, ffn_expand)

    def forward(self, x, element_size: int, level: int, flux: str | None = None):
        x = x + self.attention(x, element_size, level, flux)
        return x + self.ffn(self.norm(x))
