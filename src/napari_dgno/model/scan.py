"""The selective state-space scan (Mamba's S6), in pure PyTorch.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t,        y_t = C_t · h_t + D x_t

Why a loop over time and not a parallel (Blelloch) scan: the network scans short windows (64–256
tokens) batched over many windows, so each step is one large, contiguous ``addcmul``. Measured on two
CPU cores, that is 3–8x faster than the log-depth parallel scan, whose strided halves and
interleaving copy every tensor ~2 log L times. Gradients come from the adjoint recurrence (another
loop, backwards in time), so autograd stores two tensors instead of a graph of L nodes.

Layout: time first. ``selective_scan_tokens`` takes (L, N, d) tokens and (L, N, n) B / C, the layout
the encoder produces; ``selective_scan`` keeps Mamba's (b, d, L) signature for callers and tests.
``selective_scan_reference`` is the obvious per-step loop the tests compare against in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _LinearRecurrence(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t along dim 0 (h_{-1} = 0), with the adjoint recurrence as backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.contiguous(), b.contiguous()
        h = torch.empty_like(b)
        h[0] = b[0]
        for t in range(1, b.shape[0]):
            torch.addcmul(b[t], a[t], h[t - 1], out=h[t])
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        a, h = ctx.saved_tensors
        grad_h = grad_h.contiguous()
        # λ_t = g_t + a_{t+1} λ_{t+1}: how much the loss changes with b_t.
        lam = torch.empty_like(grad_h)
        lam[-1] = grad_h[-1]
        for t in range(grad_h.shape[0] - 2, -1, -1):
            torch.addcmul(grad_h[t], a[t + 1], lam[t + 1], out=lam[t])
        grad_a = torch.empty_like(a)
        grad_a[0] = 0
        torch.mul(lam[1:], h[:-1], out=grad_a[1:])
        return grad_a, lam


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """All states of h_t = a_t h_{t-1} + b_t (h_{-1} = 0) along ``dim``."""
    a, b = torch.broadcast_tensors(a, b)
    h = _LinearRecurrence.apply(a.movedim(dim, 0), b.movedim(dim, 0))
    return h.movedim(0, dim)


def _states_to_output(h: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """y_t = C_t · h_t for h (L, N, d, n) and C (L, N, n), as one batched matrix product."""
    L, N, d, n = h.shape
    return torch.bmm(h.reshape(L * N, d, n), C.reshape(L * N, n, 1)).reshape(L, N, d)


@torch.no_grad()
def _scan_inference(decay, drive, C) -> torch.Tensor:
    """The forward pass without keeping the states: memory of one step instead of all L."""
    L, N, d, n = drive.shape
    y = drive.new_empty(L, N, d)
    h = drive.new_zeros(N, d, n)
    for t in range(L):
        h = torch.addcmul(drive[t], decay[t], h)
        torch.bmm(h, C[t].unsqueeze(-1), out=y[t].unsqueeze(-1))
    return y


def selective_scan_tokens(u, delta, A, B, C, D=None) -> torch.Tensor:
    """Selective scan in time-first layout: u, delta (L, N, d) with Δ already positive; A (d, n);
    B, C (L, N, n); D (d,). Returns y (L, N, d)."""
    decay = torch.exp(delta.unsqueeze(-1) * A)  # (L, N, d, n)
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(-2)  # (L, N, d, n)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C)):
        y = _states_to_output(_LinearRecurrence.apply(decay, drive), C)
    else:
        y = _scan_inference(decay, drive, C.contiguous())
    if D is not None:
        y = y + u * D
    return y


def _prepare_delta(delta, delta_bias, delta_softplus):
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    return F.softplus(delta) if delta_softplus else delta


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Mamba's signature: u, delta (b, d, L); A (d, n); B, C (b, n, L); D (d,). Returns (b, d, L)."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    y = selective_scan_tokens(
        u.permute(2, 0, 1), delta.permute(2, 0, 1), A, B.permute(2, 0, 1), C.permute(2, 0, 1), D
    )
    return y.permute(1, 2, 0)


def selective_scan_reference(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """The same recurrence, one step at a time with plain autograd: slow, obviously right, tests only."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (b, d, n, L)
    drive = (delta * u).unsqueeze(2) * B.unsqueeze(1)  # (b, d, n, L)
    h = torch.zeros_like(drive[..., 0])
    ys = []
    for t in range(u.shape[-1]):
        h = decay[..., t] * h + drive[..., t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[..., t]))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D[None, :, None]
    return y
