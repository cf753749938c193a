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
    plus_volume: bool = False,
) -> torch.Tensor:
    """Σ over each element's faces of ±F, for operators laid out as (..., nh, nw, d, d); with
    ``plus_volume``, the volume operators plus that (K_final in one pass less).

    With ``faces`` None the P0DG flux uses the volume operators on both sides of every face.
    Why slice updates and not padded differences: with small elements the operator field is as
    large as the features, and each padded copy is a full pass over it.
    """
    if faces is None:
        faces = {"left": volume, "right": volume, "top": volume, "bottom": volume}
    # Vertical faces between columns j and j+1: left side is element j's right line.
    fx = numerical_flux(faces["right"][..., :, :-1, :, :], faces["left"][..., :, 1:, :, :], tau, mode)
    # Horizontal faces between rows i and i+1: top side is element i's bottom line.
    fy = numerical_flux(faces["bottom"][..., :-1, :, :, :], faces["top"][..., 1:, :, :, :], tau, mode)
    total = volume.clone() if plus_volume else torch.zeros_like(volume)
    total[..., :, :-1, :, :] += fx
    total[..., :, 1:, :, :] -= fx
    total[..., :-1, :, :, :] += fy
    total[..., 1:, :, :, :] -= fy
    return total


def token_linear(tokens: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``tokens @ weight_t + bias`` over the last axis, as a 1x1 convolution of a channels-last view.

    Why not ``addmm``: on these shapes (10^4-10^5 tokens, 32-192 channels) oneDNN's 1x1 convolution
    is about twice as fast as the BLAS product on one thread, and the view costs no copy.
    """
    c_in, c_out = weight_t.shape
    image = tokens.reshape(1, -1, 1, c_in).permute(0, 3, 1, 2)  # (1, C, tokens, 1), channels-last
    out = pointwise(image, weight_t.t().reshape(c_out, c_in, 1, 1), bias)
    return out.permute(0, 2, 3, 1).reshape(*tokens.shape[:-1], c_out)


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

    Runs on channels-last features: only x is copied into element layout (q, k and v are then
    products of it on the tokens), and the result goes back by one permute, so the layers around it
    stay channels-last (mixing layouts makes every convolution after it 2-4x slower).
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

    def _kv_weights(self, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k, v rows of the qkv convolution, centred per head, as a (C, 2C) matrix and a bias.
        Centring is linear, so it folds into the weights: LN(k) then needs only a variance, not a
        mean, at every pixel."""
        weight, bias = self.qkv.weight[c:].flatten(1), self.qkv.bias[c:]
        centre = torch.eye(2 * c, dtype=weight.dtype, device=weight.device)
        centre = centre - _head_blocks(2 * c, self.head_dim, weight)
        return (centre @ weight).t(), centre @ bias

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

    def _tokens(self, x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """(B, C, H, W) -> (B * nh * nw, rows, cols, C): every element's pixels, token-major.

        Why whole pixels and not heads: cutting a head's 2-16 channels out of every pixel is a copy
        with tiny contiguous runs; here elements move as rows of ``cols x C`` values, and the
        per-head products are the diagonal blocks of C x C ones (a few more multiply-adds on
        matrices that are tiny anyway). Only x moves: q, k and v are products of it."""
        b, c, h, w = x.shape
        t = x.permute(0, 2, 3, 1).reshape(b, h // rows, rows, w // cols, cols, c)
        return t.transpose(2, 3).reshape(-1, rows, cols, c)

    def _project(self, tokens: torch.Tensor, with_q: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(q or None, centred kv) of (N, rows, cols, C) element tokens, as one matrix product."""
        c = tokens.shape[-1]
        weight, bias = self._kv_weights(c)
        if with_q:
            weight = torch.cat([self.qkv.weight[:c].flatten(1).t(), weight], dim=1)
            bias = torch.cat([self.qkv.bias[:c], bias])
        out = token_linear(tokens, weight, bias)
        return (out[..., :c], out[..., c:]) if with_q else (None, out)

    def _element_operators(self, kv: torch.Tensor, grid: tuple[int, int, int], flux, plus_volume: bool):
        """(K_volume, K_flux) on the (B, heads, nh, nw, d, d) grid from centred (N, rows, cols, 2C)
        kv tokens; with ``plus_volume`` the second is K_final = K_volume + K_flux, built in one pass."""
        rows, cols, c = kv.shape[1], kv.shape[2], kv.shape[-1] // 2
        heads, d = self.heads, self.head_dim
        k, v = self._normalise(kv).split(c, dim=-1)

        def operator(k, v):  # (N, ..., C) tokens -> (B, heads, nh, nw, d, d)
            n = k[0].numel() // c
            if d >= PER_HEAD_MIN_DIM:
                k, v = k.reshape(-1, n, heads, d), v.reshape(-1, n, heads, d)
                ops = torch.einsum("nthd,nthe->nhde", k, v) / n
            else:
                ops = self._per_head(k.reshape(-1, n, c).transpose(1, 2) @ v.reshape(-1, n, c)) / n
            return ops.reshape(*grid, heads, d, d).permute(0, 3, 1, 2, 4, 5)

        volume = operator(k, v)
        flux = self.flux if flux is None else flux
        if flux == "none":
            return volume, (volume if plus_volume else torch.zeros_like(volume))
        if flux == "p0dg":
            faces = None
        elif flux == "face":
            lines = {
                "left": (slice(None), slice(None), 0),
                "right": (slice(None), slice(None), cols - 1),
                "top": (slice(None), 0),
                "bottom": (slice(None), rows - 1),
            }
            faces = {name: operator(k[line], v[line]) for name, line in lines.items()}
        else:
            raise ValueError(f"unknown flux variant {flux!r}")
        return volume, flux_field(volume, faces, self.tau, self.flux_mode, plus_volume)

    def operators(self, x: torch.Tensor, element_size: int, level: int, flux: str | None = None):
        """(q, K_volume, K_flux, block) for every element; exposed for tests and kernel overlays.

        The operators are (B, heads, nh, nw, d, d); q is (B * nh * nw, rows * cols, C), token-major
        per element.
        """
        b, c, h, w = x.shape
        rows, cols = element_tokens(element_size, level, h, w)
        q, kv = self._project(self._tokens(x, rows, cols), with_q=True)
        volume, flux_term = self._element_operators(kv, (b, h // rows, w // cols), flux, plus_volume=False)
        return q.reshape(-1, rows * cols, c), volume, flux_term, (rows, cols)

    def forward(self, x, element_size: int, level: int, flux: str | None = None, residual: bool = False):
        """proj(q · K_final) at every pixel; with ``residual``, x plus that.

        Everything after the one copy of x into element layout is a matrix product on element
        tokens, and with ``residual`` the sum with x is the pass that brings the result back to
        image layout. Where elements have at least C tokens (the 1/2-resolution layer of the small
        preset), q and proj are folded into one C x C matrix per element, Wqᵀ · blockdiag(K) · Wpᵀ:
        both are linear, and that saves two of the four per-pixel channel products. Where elements
        are smaller than that, forming the matrices would cost more than it saves.
        """
        b, c, h, w = x.shape
        rows, cols = element_tokens(element_size, level, h, w)
        nh, nw, heads, d = h // rows, w // cols, self.heads, self.head_dim
        tokens = self._tokens(x, rows, cols)
        fold = rows * cols >= c
        q, kv = self._project(tokens, with_q=not fold)
        _, k_final = self._element_operators(kv, (b, nh, nw), flux, plus_volume=True)
        k_final = k_final.permute(0, 2, 3, 1, 4, 5).reshape(-1, heads, d, d)
        proj_weight_t = self.proj.weight.flatten(1).t()
        if fold:
            # blockdiag(K) · Wpᵀ head by head: (N, heads, d, d) @ (heads, d, C) -> (N, C, C)
            k_proj = (k_final @ proj_weight_t.reshape(heads, d, c)).reshape(-1, c, c)
            mixing = self.qkv.weight[:c].flatten(1).t() @ k_proj  # x · mixing = proj(q · K) - bias
            shift = self.qkv.bias[:c] @ k_proj + self.proj.bias  # (N, C)
            out = torch.baddbmm(shift[:, None, :], tokens.reshape(-1, rows * cols, c), mixing)
        elif d >= PER_HEAD_MIN_DIM:
            q = q.reshape(-1, rows * cols, heads, d)
            out = torch.einsum("nthd,nhde->nthe", q, k_final).reshape(-1, c)
            out = token_linear(out, proj_weight_t, self.proj.bias)
        else:  # K_final as a block-diagonal C x C matrix per element: q · K is one batched product
            eye = torch.eye(heads, dtype=x.dtype, device=x.device).view(1, heads, 1, heads, 1)
            block = (k_final.reshape(-1, heads, d, 1, d) * eye).reshape(-1, c, c)
            out = (q.reshape(-1, rows * cols, c) @ block).reshape(-1, c)
            out = token_linear(out, proj_weight_t, self.proj.bias)
        out = out.view(b, nh, nw, rows, cols, c).transpose(2, 3)
        if residual:  # x first: the sum takes x's (channels-last) layout, one pass, no extra copy
            out = x.permute(0, 2, 3, 1).reshape(b, nh, rows, nw, cols, c) + out
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)


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
        x = self.attention(x, element_size, level, flux, residual=True)
        return x + self.ffn(self.norm(x))
