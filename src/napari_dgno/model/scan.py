"""The selective state-space scan (Mamba's S6), in pure PyTorch.

    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t x_t,        y_t = C_t · h_t + D x_t

Why a loop over time and not a parallel (Blelloch) scan: the network scans short windows (64–256
tokens) batched over many windows, so each step is a few large, contiguous operations. Measured on
two CPU cores, that is 3–8x faster than the log-depth parallel scan, whose strided halves and
interleaving copy every tensor ~2 log L times.

Why one fused step and a hand-written backward: the decays exp(Δ_t A) and the drives Δ_t B_t x_t are
(L, N, d, n) tensors, 16 MB for a training batch, too large for the CPU's cache. Built one time step
at a time they are 250 kB slices that stay in cache, and the backward pass (the adjoint recurrence,
backwards in time) recomputes each step's decay instead of storing it. Autograd keeps only the states
h, and no chain of broadcasting products and reductions over the full tensors. On a GPU the
balance is the other way (a kernel launch costs microseconds, memory is plentiful): there the scan
builds whole tensors and launches one kernel per step (``_scan_large_kernels``).

Why the CPU threads split the windows between them (``over_windows``) and do not share each step:
a step's operations take ~10 µs, and PyTorch's fork and join per operation made the scan 2x slower
on two threads than on one.

Layout: time first. ``selective_scan_tokens`` takes (L, N, d) tokens and (L, N, n) B / C, the layout
the encoder produces; ``selective_scan`` keeps Mamba's (b, d, L) signature for callers and tests.
``selective_scan_reference`` is the obvious per-step loop the tests compare against in float64.
"""

from __future__ import annotations

import concurrent.futures
import os

import torch
import torch.nn.functional as F


def _forward_steps(u, delta, A, B, C, states, y) -> None:
    """The training recurrence over some windows (views of the windows axis), every state kept."""
    drive_in = delta * u
    for t in range(u.shape[0]):
        h = states[t]
        if t == 0:
            h.zero_()  # h_{-1} = 0
        else:
            torch.mul(delta[t].unsqueeze(-1), A, out=h).exp_().mul_(states[t - 1])
        h.addcmul_(drive_in[t].unsqueeze(-1), B[t].unsqueeze(-2))
        torch.bmm(h, C[t].unsqueeze(-1), out=y[t].unsqueeze(-1))


def _backward_steps(grad_y, u, delta, A, B, C, states, grads) -> torch.Tensor:
    """The adjoint recurrence over some windows: writes the gradients of u, Δ, B and C into
    ``grads`` (views) and returns these windows' share of A's gradient."""
    grad_u, grad_delta, grad_B, grad_C = grads
    drive_in = delta * u
    grad_A_tokens = torch.zeros_like(states[0])  # Σ_t of ∂loss/∂(Δ_t A) · Δ_t, summed over N last
    lam = torch.zeros_like(states[0])  # λ_t = ∂loss/∂h_t, through all later steps
    decay_next = None
    for t in range(u.shape[0] - 1, -1, -1):
        # λ_t = g_t C_t + exp(Δ_{t+1} A) λ_{t+1}
        if decay_next is not None:
            lam.mul_(decay_next)
        lam.addcmul_(grad_y[t].unsqueeze(-1), C[t].unsqueeze(-2))
        torch.bmm(grad_y[t].unsqueeze(-2), states[t], out=grad_C[t].unsqueeze(-2))
        # drive (Δ x)_t B_t: gradients to Δ x and to B
        grad_drive_in = torch.bmm(lam, B[t].unsqueeze(-1)).squeeze(-1)
        torch.bmm(drive_in[t].unsqueeze(-2), lam, out=grad_B[t].unsqueeze(-2))
        torch.mul(grad_drive_in, delta[t], out=grad_u[t])
        # decay exp(Δ_t A): gradient to its exponent, then to Δ_t and A
        decay = torch.exp(delta[t].unsqueeze(-1) * A)
        if t > 0:
            grad_exponent = lam * states[t - 1] * decay
            grad_delta[t] = (grad_exponent * A).sum(-1).addcmul_(grad_drive_in, u[t])
            grad_A_tokens.addcmul_(grad_exponent, delta[t].unsqueeze(-1))
        else:
            torch.mul(grad_drive_in, u[t], out=grad_delta[t])
        decay_next = decay
    return grad_A_tokens.sum(0)


class _SelectiveScan(torch.autograd.Function):
    """y_t = C_t · h_t with h_t = exp(Δ_t A) h_{t-1} + (Δ_t x_t) B_t, for (L, N, d) x and Δ, (d, n) A
    and (L, N, n) B, C; the D x skip is left to the caller. Windows are split over CPU threads in
    both directions (``over_windows``)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
        L, N, d = u.shape
        states = u.new_empty(L, N, d, A.shape[-1])  # every state, for the backward pass
        y = u.new_empty(L, N, d)

        def share(w: slice) -> None:
            _forward_steps(u[:, w], delta[:, w], A, B[:, w], C[:, w], states[:, w], y[:, w])

        over_windows(share, N, u.device)
        ctx.save_for_backward(u, delta, A, B, C, states)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, delta, A, B, C, states = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grads = (torch.empty_like(u), torch.empty_like(delta), torch.empty_like(B), torch.empty_like(C))

        def share(w: slice) -> torch.Tensor:
            views = tuple(g[:, w] for g in grads)
            return _backward_steps(
                grad_y[:, w], u[:, w], delta[:, w], A, B[:, w], C[:, w], states[:, w], views
            )

        grad_A = sum(over_windows(share, u.shape[1], u.device))
        grad_u, grad_delta, grad_B, grad_C = grads
        return grad_u, grad_delta, grad_A, grad_B, grad_C


class _LinearRecurrence(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t along dim 0 (h_{-1} = 0), with the adjoint recurrence as backward: the
    large-kernel path, for GPUs."""

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


def _scan_large_kernels(u, delta, A, B, C) -> torch.Tensor:
    """Decays and drives as whole (L, N, d, n) tensors, one launch per recurrence step: fewer, larger
    kernels, which is what a GPU wants (each launch costs microseconds; memory is plentiful)."""
    decay = torch.exp(delta.unsqueeze(-1) * A)
    drive = (delta * u).unsqueeze(-1) * B.unsqueeze(-2)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C)):
        h = _LinearRecurrence.apply(decay, drive)
        L, N, d, n = h.shape
        return torch.bmm(h.reshape(L * N, d, n), C.reshape(L * N, n, 1)).reshape(L, N, d)
    with torch.no_grad():  # keep one state, not L
        L, N, d, n = drive.shape
        y, h, C = drive.new_empty(L, N, d), drive.new_zeros(N, d, n), C.contiguous()
        for t in range(L):
            h = torch.addcmul(drive[t], decay[t], h)
            torch.bmm(h, C[t].unsqueeze(-1), out=y[t].unsqueeze(-1))
        return y


# Windows per CPU thread below which the scan is not split (the split's own cost is ~0.1 ms).
MIN_WINDOWS_PER_THREAD = 16
_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_WORKERS = 0


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool there, never wait on those."""
    global _POOL, _POOL_WORKERS
    _POOL, _POOL_WORKERS = None, 0


if hasattr(os, "register_at_fork"):  # POSIX only; Windows does not fork
    os.register_at_fork(after_in_child=_forget_pool)


def over_windows(fn, windows: int, device: torch.device) -> list:
    """``fn(slice)`` over shares of the windows axis, one CPU thread each; their results in order.

    Why by hand: each scan step is a few operations of ~10 µs, too short for PyTorch's own
    parallelism, whose fork and join per operation made the scan 2-2.5x slower on two threads than
    on one (inference and training alike). Windows are independent, so each thread scans its share
    with one thread of its own: the same arithmetic, so the same result, for any thread count.
    """
    global _POOL, _POOL_WORKERS
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    parts = max(1, min(threads, windows // MIN_WINDOWS_PER_THREAD))
    if parts == 1:
        return [fn(slice(0, windows))]
    bounds = [windows * i // parts for i in range(parts + 1)]
    shares = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    inference = torch.is_inference_mode_enabled()

    def run(share: slice):  # grad and inference modes are per thread: carry them (no graph here)
        with torch.inference_mode(inference), torch.no_grad():
            return fn(share)

    if _POOL is None or _POOL_WORKERS < parts - 1:
        _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="dgno-scan")
        _POOL_WORKERS = parts - 1
    torch.set_num_threads(1)  # for this thread, and for the pool's (they only ever run here)
    try:
        futures = [_POOL.submit(run, share) for share in shares[1:]]
        first = run(shares[0])
        return [first] + [future.result() for future in futures]
    finally:
        torch.set_num_threads(threads)


def _scan_steps(u, delta, A_t, B, C, y) -> None:
    """The inference recurrence over (L, N, d) tokens, N windows (views of the windows axis)."""
    L, N, d = u.shape
    h = u.new_zeros(N, A_t.shape[0], d)
    decay = torch.empty_like(h)
    drive_in = delta * u
    for t in range(L):
        if t:  # h_{-1} = 0: nothing to decay at the first step
            torch.mul(delta[t].unsqueeze(1), A_t, out=decay).exp_()
            h.mul_(decay)
        h.addcmul_(B[t].unsqueeze(-1), drive_in[t].unsqueeze(1))
        torch.bmm(C[t].unsqueeze(1), h, out=y[t].unsqueeze(1))


def _scan_no_grad(u, delta, A, B, C) -> torch.Tensor:
    """The fused scan without gradients: one state, laid out (N, n, d) instead of (N, d, n).

    Why another layout: every per-step operation (decay, multiply-add, output) then runs along the
    d channels, contiguous and tens to hundreds long, instead of the n = 4-16 states; at the shipped
    model's bottleneck (d = 128) inference scans 2x faster. Training keeps (N, d, n), which its
    hand-written backward is written for."""
    u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
    L, N, d = u.shape
    A_t = A.t().contiguous()  # (n, d)
    y = u.new_empty(L, N, d)

    def share(w: slice) -> None:
        _scan_steps(u[:, w], delta[:, w], A_t, B[:, w], C[:, w], y[:, w])

    over_windows(share, N, u.device)
    return y


def selective_scan_tokens(u, delta, A, B, C, D=None, fused: bool | None = None) -> torch.Tensor:
    """Selective scan in time-first layout: u, delta (L, N, d) with Δ already positive; A (d, n);
    B, C (L, N, n); D (d,). Returns y (L, N, d).

    ``fused``: one cache-sized step at a time (``_SelectiveScan``, or ``_scan_no_grad`` without
    gradients), or whole tensors and few large kernels (``_scan_large_kernels``); None picks the
    first on CPU, the second on GPU."""
    if fused is None:
        fused = not u.is_cuda
    if not fused:
        y = _scan_large_kernels(u, delta, A, B, C)
    elif torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C)):
        y = _SelectiveScan.apply(u, delta, A, B, C)
    else:
        with torch.no_grad():
            y = _scan_no_grad(u, delta, A, B, C)
    if D is not None:
        y = y + u * D
    return y


def _prepare_delta(delta, delta_bias, delta_softplus):
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    return F.softplus(delta) if delta_softplus else delta


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, fused=None):
    """Mamba's signature: u, delta (b, d, L); A (d, n); B, C (b, n, L); D (d,). Returns (b, d, L)."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    y = selective_scan_tokens(
        u.permute(2, 0, 1), delta.permute(2, 0, 1), A, B.permute(2, 0, 1), C.permute(2, 0, 1), D, fused
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
