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

from .blocks import GatedFFN, LayerNorm2d, Pointwise, pointwise
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


def element_attention_reference(attn, x: torch.Tensor, element_size: int, level: int, flux=None):
    """``ElementAttention.forward`` written the obvious way: per-head tensors cut into elements,
    ``layer_norm`` per head, one operator per element and head. Slow; the tests compare against it."""
    b, c, h, w = x.shape
    rows, cols = element_tokens(element_size, level, h, w)
    q, k, v = attn.qkv(x).reshape(b, 3, attn.heads, attn.head_dim, h, w).unbind(1)
    q, k, v = (to_elements(t, rows, cols) for t in (q, k, v))
    k, v = attn.k_norm(k), attn.v_norm(v)
    volume = galerkin_operator(k, v)
    flux = attn.flux if flux is None else flux
    if flux == "none":
        total = volume
    else:
        faces = face_operators(k, v, rows, cols) if flux == "face" else None
        total = volume + flux_field(volume, faces, attn.tau, attn.flux_mode)
    return attn.proj(from_elements(q @ total, rows, cols).reshape(b, c, h, w))


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


def _head_blocks(channels: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(channels x channels) block-diagonal matrix averaging each run of ``width`` channels."""
    heads = channels // width
    block = torch.full((width, width), 1.0 / width, dtype=like.dtype, device=like.device)
    return torch.block_diag(*([block] * heads))


# Heads of at least this many channels take per-head products; narrower ones take whole-channel
# products and keep their diagonal blocks (heads-fold more multiply-adds, but on matrices large enough
# for the batched product to run well). Measured on one CPU thread: at 16 channels a head (1/4
# resolution of the small preset) per-head products are 2.5-4x faster, at 8 channels 1.4-5x slower.
PER_HEAD_MIN_DIM = 16


class ElementAttention(nn.Module):
    """q · K_final for every element: the volume operator plus the interface flux.

    Runs on channels-last features: q, k and v come out of one (B, H, W, 3C) tensor by one permute
    into element layout, and the result goes back by one permute, so the layers around it stay
    channels-last (mixing layouts makes every convolution after it 2-4x slower).
    """

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
        self.qkv = Pointwise(channels, channels * 3)
        self.k_norm = HeadNorm(heads, self.head_dim)
        self.v_norm = HeadNorm(heads, self.head_dim)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)))
        self.proj = Pointwise(channels, channels)

    def _qkv_weights(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The qkv convolution with k and v centred per head. Centring is linear, so it folds into
        the weights: LN(k) then needs only a variance, not a mean, at every pixel."""
        weight, bias = self.qkv.weight.flatten(1), self.qkv.bias
        centre = torch.eye(2 * c, dtype=weight.dtype, device=weight.device)
        centre = centre - _head_blocks(2 * c, self.head_dim, weight)
        weight = torch.cat([weight[:c], centre @ weight[c:]])
        bias = torch.cat([bias[:c], centre @ bias[c:]])
        return weight[:, :, None, None], bias

    def _normalise(self, kv: torch.Tensor) -> torch.Tensor:
        """LN(k), LN(v) per head for centred (..., 2C) tokens: only a variance per head is left.
        (Heads are 2-16 channels, too short for ``layer_norm``'s kernel; a mean over a (..., heads,
        d) view is 5x faster than the block-diagonal averaging product it replaces.)"""
        shape, d = kv.shape, self.head_dim
        heads = kv.reshape(*shape[:-1], shape[-1] // d, d)
        scale = (heads.square().mean(-1, keepdim=True) + self.k_norm.eps).rsqrt_()
        gain = torch.cat([self.k_norm.weight.flatten(), self.v_norm.weight.flatten()])
        shift = torch.cat([self.k_norm.bias.flatten(), self.v_norm.bias.flatten()])
        return torch.addcmul(shift, (heads * scale).reshape(shape), gain)

    def _per_head(self, full: torch.Tensor) -> torch.Tensor:
        """The diagonal (head, head) blocks of channel x channel products: (N, C, C) -> (N, heads, d, d)."""
        n, heads, d = full.shape[0], self.heads, self.head_dim
        return full.view(n, heads, d, heads, d).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)

    def operators(self, x: torch.Tensor, element_size: int, level: int, flux: str | None = None):
        """(q, K_volume, K_flux, block) for every element; exposed for tests and kernel overlays.

        The operators are (B, heads, nh, nw, d, d); q is (B * nh * nw, rows * cols, C), token-major
        per element. Why whole channels and not heads in the token layout: cutting a head's 2-16
        channels out of every pixel is a copy with tiny contiguous runs; here elements move as rows
        of ``cols x 3C`` values, and the per-head products are the diagonal blocks of C x C ones
        (a few more multiply-adds on matrices that are tiny anyway).
        """
        b, c, h, w = x.shape
        rows, cols = element_tokens(element_size, level, h, w)
        nh, nw, heads, d = h // rows, w // cols, self.heads, self.head_dim
        qkv = pointwise(x, *self._qkv_weights(c)).permute(0, 2, 3, 1)
        qkv = qkv.reshape(b, nh, rows, nw, cols, 3 * c).transpose(2, 3).reshape(-1, rows, cols, 3 * c)
        q, kv = qkv.split([c, 2 * c], dim=-1)
        k, v = self._normalise(kv).split(c, dim=-1)

        def operator(k, v):  # (N, ..., C) tokens -> (B, heads, nh, nw, d, d)
            n = k[0].numel() // c
            if d >= PER_HEAD_MIN_DIM:
                k, v = k.reshape(-1, n, heads, d), v.reshape(-1, n, heads, d)
                ops = torch.einsum("nthd,nthe->nhde", k, v) / n
            else:
                ops = self._per_head(k.reshape(-1, n, c).transpose(1, 2) @ v.reshape(-1, n, c)) / n
            return ops.reshape(b, nh, nw, heads, d, d).permute(0, 3, 1, 2, 4, 5)

        volume = operator(k, v)
        flux = self.flux if flux is None else flux
        if flux == "none":
            flux_term = torch.zeros_like(volume)
        elif flux == "p0dg":
            flux_term = flux_field(volume, None, self.tau, self.flux_mode)
        elif flux == "face":
            lines = {
                "left": (slice(None), slice(None), 0),
                "right": (slice(None), slice(None), cols - 1),
                "top": (slice(None), 0),
                "bottom": (slice(None), rows - 1),
            }
            faces = {name: operator(k[line], v[line]) for name, line in lines.items()}
            flux_term = flux_field(volume, faces, self.tau, self.flux_mode)
        else:
            raise ValueError(f"unknown flux variant {flux!r}")
        return q.reshape(b * nh * nw, rows * cols, c), volume, flux_term, (rows, cols)

    def forward(self, x, element_size: int, level: int, flux: str | None = None):
        b, c, h, w = x.shape
        q, volume, flux_term, (rows, cols) = self.operators(x, element_size, level, flux)
        nh, nw, heads, d = h // rows, w // cols, self.heads, self.head_dim
        k_final = (volume + flux_term).permute(0, 2, 3, 1, 4, 5)
        if d >= PER_HEAD_MIN_DIM:
            q = q.reshape(*q.shape[:2], heads, d)
            out = torch.einsum("nthd,nhde->nthe", q, k_final.reshape(-1, heads, d, d))
        else:  # K_final per element as a block-diagonal C x C matrix: q · K is one batched product
            eye = torch.eye(heads, dtype=x.dtype, device=x.device).view(1, heads, 1, heads, 1)
            out = q @ (k_final.reshape(-1, heads, d, 1, d) * eye).reshape(-1, c, c)
        out = out.reshape(b, nh, nw, rows, cols, c).transpose(2, 3).reshape(b, h, w, c)
        return self.proj(out.permute(0, 3, 1, 2))


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
