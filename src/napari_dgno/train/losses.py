"""The reference loss: L1 at every output scale plus a small L1 on the Fourier spectrum."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multiscale_l1_fft(outputs: list[torch.Tensor], target: torch.Tensor, fft_weight: float = 0.01):
    """Σ over scales of L1(out, target at that scale) + fft_weight · L1(|FFT(out) − FFT(target)|).

    The FFT term keeps high frequencies honest, which plain L1 under-weights on blurred inputs.
    """
    total = target.new_zeros(())
    for out in outputs:
        factor = target.shape[-1] // out.shape[-1]
        ref = F.avg_pool2d(target, factor) if factor > 1 else target
        out = out.float()
        total = total + F.l1_loss(out, ref)
        if fft_weight:
            diff = torch.fft.rfft2(out) - torch.fft.rfft2(ref)
            total = total + fft_weight * diff.abs().mean()
    return total
