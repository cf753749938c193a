"""The selective state-space scan (Mamba's S6), in pure PyTorch.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t,        y_t = C_t · h_t + D x_t

``selective_scan`` is the one entry point the network calls. It solves the linear recurrence with a
parallel odd-even (Blelloch-style) scan: O(L) work, O(log L) depth, autograd-friendly, no Python loop
over positions. ``selective_scan_reference`` is the naive sequential loop the tests compare against.
A CUDA kernel (``mamba_ssm``) is used instead when it is installed and the tensors live on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # Optional GPU kernel; never required.
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_scan
except Exception:  # pragma: no cover - not installed on CPU machines
    _cuda_scan = None


def linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of h_t = a_t h_{t-1} + b_t (h_{-1} = 0) along the last axis, in O(log L) depth.

    Pairs of steps are composed into one step ((a1, b1) then (a2, b2) is (a2 a1, a2 b1 + b2)), the
    half-length problem is solved recursively, and the even positions are filled in from it.
    """
    length = a.shape[-1]
    if length == 1:
        return b
    if length % 2:  # pad with the identity step so pairs line up
        a = F.pad(a, (0, 1), value=1.0)
        b = F.pad(b, (0, 1), value=0.0)
    a_even, a_odd = a[..., 0::2], a[..., 1::2]
    b_even, b_odd = b[..., 0::2], b[..., 1::2]
    h_odd = linear_recurrence(a_odd * a_even, a_odd * b_even + b_odd)
    h_prev = F.pad(h_odd[..., :-1], (1, 0))  # state just before each even position
    h_even = a_even * h_prev + b_even
    h = torch.stack((h_even, h_odd), dim=-1).flatten(-2)
    return h[..., :length]


def _discretise(u, delta, A, B, C, delta_bias, delta_softplus):
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # Shapes: u, delta (b, d, l); A (d, n); B, C (b, n, l).
    decay = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (b, d, n, l)
    drive = (delta * u).unsqueeze(2) * B.unsqueeze(1)  # (b, d, n, l)
    return decay, drive


def selective_scan_torch(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Parallel selective scan. u, delta: (b, d, l); A: (d, n); B, C: (b, n, l); D: (d,)."""
    decay, drive = _discretise(u, delta, A, B, C, delta_bias, delta_softplus)
    h = linear_recurrence(decay, drive)
    y = torch.einsum("bdnl,bnl->bdl", h, C)
    if D is not None:
        y = y + u * D[None, :, None]
    return y


def selective_scan_reference(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """The same recurrence, one step at a time: slow, obviously right, used only in tests."""
    decay, drive = _discretise(u, delta, A, B, C, delta_bias, delta_softplus)
    h = torch.zeros_like(drive[..., 0])
    ys = []
    for t in range(u.shape[-1]):
        h = decay[..., t] * h + drive[..., t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[..., t]))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D[None, :, None]
    return y


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
    """Dispatch: the fused CUDA kernel when available for GPU tensors, else the parallel scan."""
    if _cuda_scan is not None and u.is_cuda:  # pragma: no cover - GPU only
        return _cuda_scan(
            u.contiguous(),
            delta.contiguous(),
            A.contiguous(),
            B.contiguous(),
            C.contiguous(),
            D,
            None,
            delta_bias,
            delta_softplus,
        )
    return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
