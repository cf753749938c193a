"""Encoder blocks with a Mamba-style selective scan (after MambaIRv2's attentive state-space block).

Tokens are sorted by a learned scalar "semantic" score before a single 1-D scan, so that pixels that
look alike (nuclei interior, background, edges) become neighbours in the scan regardless of where they
are; the outputs are put back in place afterwards. The sort order is data-dependent but carries no
gradient; the scan's parameters (Δ, B, C) are functions of the tokens, which is what makes it selective.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import GatedFFN, LayerNorm2d
from .scan import selective_scan


class SelectiveScan2d(nn.Module):
    """One selective scan over a (B, C, H, W) feature map, tokens visited in semantic order."""

    def __init__(self, channels: int, d_state: int = 8, expand: float = 1.0):
        super().__init__()
        inner = int(channels * expand)
        self.inner, self.d_state = inner, d_state
        self.dt_rank = max(1, math.ceil(channels / 16))
        self.in_proj = nn.Conv2d(channels, inner * 2, 1)
        self.dwconv = nn.Conv2d(inner, inner, 3, padding=1, groups=inner)
        self.score = nn.Conv2d(inner, 1, 1)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        # S4D-real initialisation of A and Mamba's initialisation of the step size.
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(inner))
        dt = torch.exp(torch.rand(inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        u, z = self.in_proj(x).chunk(2, dim=1)
        u = nn.functional.silu(self.dwconv(u))
        order = self.score(u).flatten(1).argsort(dim=1).detach()  # (b, l)
        tokens = u.flatten(2)  # (b, inner, l)
        idx = order[:, None, :].expand(-1, self.inner, -1)
        tokens = tokens.gather(2, idx)
        params = self.x_proj(tokens.transpose(1, 2))  # (b, l, r + 2n)
        dt, B, C = params.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj.weight @ dt.transpose(1, 2)  # (b, inner, l)
        # The recurrence multiplies many decays: run it in float32 even under bf16/fp16 autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = selective_scan(
                tokens.float(),
                delta.float(),
                -torch.exp(self.A_log.float()),
                B.transpose(1, 2).float().contiguous(),
                C.transpose(1, 2).float().contiguous(),
                self.D.float(),
                delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True,
            )
        y = torch.empty_like(y).scatter_(2, idx, y).to(z.dtype)  # undo the sort
        y = self.out_norm(y.transpose(1, 2)).transpose(1, 2).reshape(b, self.inner, h, w)
        return self.out_proj(y * nn.functional.silu(z))


class ScanBlock(nn.Module):
    """Pre-norm residual block: selective scan mixer, then a gated feed-forward."""

    def __init__(self, channels: int, d_state: int = 8, expand: float = 1.0, ffn_expand: float = 2.0):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.mixer = SelectiveScan2d(channels, d_state, expand)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GatedFFN(channels, ffn_expand)
        self.skip_scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.skip_scale + self.mixer(self.norm1(x))
        return x + self.ffn(self.norm2(x))
