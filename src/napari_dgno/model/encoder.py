"""Encoder blocks with a Mamba-style selective scan (after MambaIRv2's attentive state-space block).

Tokens are sorted by a scalar "semantic" score before a 1-D scan, so that pixels that look alike
(nuclei interior, background, edges) become neighbours in the scan regardless of where they are; the
outputs are put back in place afterwards. The scan's parameters (Δ, B, C) are functions of the
tokens, which is what makes it selective.

Two choices make the block fast and its result independent of how an image is tiled:
- ``window`` (pixels): tokens are sorted and scanned inside fixed windows on a grid anchored at the
  image origin, so a pixel's result depends on a bounded neighbourhood, the same in training and
  inference; tiles aligned to that grid see the same windows. 0 scans the whole image at once.
- ``score_gate``: a sort order has no gradient, so on its own the score would stay the random
  projection it was initialised to. Scaling each scanned token by 2·sigmoid(score) gives the score a
  gradient through what the scan accumulates, and so lets it learn which tokens matter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import GatedFFN, LayerNorm2d, Pointwise
from .elements import from_windows, to_windows, window_tokens
from .scan import selective_scan_tokens


class SelectiveScan2d(nn.Module):
    """One selective scan per window of a (B, C, H, W) feature map, tokens visited in score order."""

    def __init__(
        self,
        channels: int,
        d_state: int = 8,
        expand: float = 1.0,
        window: int = 0,
        level: int = 0,
        score_gate: bool = False,
    ):
        super().__init__()
        inner = int(channels * expand)
        self.inner, self.d_state = inner, d_state
        self.window, self.level, self.score_gate = window, level, score_gate
        self.dt_rank = max(1, math.ceil(channels / 16))
        self.in_proj = Pointwise(channels, inner * 2)
        self.dwconv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.score = Pointwise(inner, 1)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        # S4D-real initialisation of A and Mamba's initialisation of the step size.
        # (A list, not arange: arange on the meta device, where checkpoints are sized before they are
        # loaded, goes through torch's Python decompositions and costs seconds of imports.)
        a = torch.tensor([float(i) for i in range(1, d_state + 1)]).repeat(inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(inner))
        dt = torch.exp(torch.rand(inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = Pointwise(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        rows, cols = window_tokens(self.window, self.level, h, w)
        u, z = self.in_proj(x).chunk(2, dim=1)
        u = nn.functional.silu(self.dwconv(u))
        score = to_windows(self.score(u), rows, cols)[..., 0]  # (L, N)
        order = score.argsort(dim=0)
        idx = order.unsqueeze(-1).expand(-1, -1, self.inner)
        tokens = to_windows(u, rows, cols).gather(0, idx)  # (L, N, inner), in score order
        if self.score_gate:
            tokens = tokens * (2 * torch.sigmoid(score.gather(0, order))).unsqueeze(-1)
        dt, B, C = self.x_proj(tokens).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        # The recurrence multiplies many decays: run it in float32 even under bf16/fp16 autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            delta = nn.functional.softplus(self.dt_proj(dt.float()))
            y = selective_scan_tokens(
                tokens.float(), delta, -torch.exp(self.A_log.float()), B.float(), C.float(), self.D.float()
            )
        y = self.out_norm(torch.empty_like(y).scatter_(0, idx, y))  # undo the sort
        y = from_windows(y, b, h, w, rows, cols).to(z.dtype)
        return self.out_proj(y * nn.functional.silu(z))


class ScanBlock(nn.Module):
    """Pre-norm residual block: selective scan mixer, then a gated feed-forward."""

    def __init__(
        self,
        channels: int,
        d_state: int = 8,
        expand: float = 1.0,
        ffn_expand: float = 2.0,
        window: int = 0,
        level: int = 0,
        score_gate: bool = False,
    ):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.mixer = SelectiveScan2d(channels, d_state, expand, window, level, score_gate)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GatedFFN(channels, ffn_expand)
        self.skip_scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.mixer(self.norm1(x)), x, self.skip_scale)
        return x + self.ffn(self.norm2(x))
