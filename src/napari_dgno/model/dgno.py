"""DGNO, the network: scan encoder, DG operator decoder, three outputs each with an input residual.

    image ─ intro ─ [enc 0] ─ down ─ [enc 1] ─ down ─ [enc 2] ─ down ─ [enc 3 (bottleneck)]
                       │       (+ 1/2 image)  │  (+ 1/4 image) │                    │
                    [DG 0] ◄─ up ─────── [DG 1] ◄─ up ─────── [DG 2] ◄─ up ────────┘
                       ▼                     ▼                    ▼
                  full output            1/2 output           1/4 output   (each + input at that scale)

Images of any size are reflect-padded to whole elements (and to the U-Net's multiple) and cropped back.
``element_size`` and ``flux`` may be overridden per call: the weights do not depend on either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, NAFBlock, Pointwise, Upsample, channels_last_weights
from .config import DGNOConfig, check_element_size
from .dg import DGLayer
from .elements import pad_multiple
from .encoder import ScanBlock


class DGNO(nn.Module):
    def __init__(self, config: DGNOConfig):
        super().__init__()
        self.config = config
        c, levels = config.width, config.levels
        widths = [c << level for level in range(levels)]
        self.intro = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.encoders = nn.ModuleList(
            nn.Sequential(*(self._encoder_block(kind, widths[i], i) for _ in range(n)))
            for i, (kind, n) in enumerate(zip(config.enc_kinds, config.enc_blocks, strict=True))
        )
        self.downs = nn.ModuleList(Downsample(widths[i]) for i in range(levels - 1))
        # Multi-scale inputs (MIMO-UNet): the image at 1/2, 1/4 ... is injected after each downsample.
        self.injects = nn.ModuleList(
            nn.Conv2d(config.in_channels, widths[i], 3, padding=1) for i in range(1, levels - 1)
        )
        self.ups = nn.ModuleList(Upsample(widths[i + 1], config.upsample) for i in range(levels - 1))
        self.fuses = nn.ModuleList(Pointwise(widths[i] * 2, widths[i]) for i in range(levels - 1))
        self.decoders = nn.ModuleList(
            nn.ModuleList(
                DGLayer(
                    widths[i],
                    config.heads,
                    config.flux,
                    config.flux_mode,
                    config.tau_init,
                    config.ffn_expand,
                )
                for _ in range(config.dec_layers[i])
            )
            for i in range(levels - 1)
        )
        self.heads = nn.ModuleList(
            nn.Conv2d(widths[i], config.in_channels, 3, padding=1) for i in range(levels - 1)
        )
        channels_last_weights(self)

    def _encoder_block(self, kind: str, channels: int, level: int) -> nn.Module:
        cfg = self.config
        if kind == "scan":
            return ScanBlock(
                channels, cfg.d_state, cfg.ssm_expand, cfg.ffn_expand, cfg.scan_window, level, cfg.score_gate
            )
        return NAFBlock(channels, pool=max(1, cfg.pool_window >> level) if cfg.pool_window else 0)

    def pad_multiple(self, element_size: int | None = None) -> int:
        """Input sides are padded up to a multiple of this (and tiles start on multiples of it)."""
        e = self.config.element_size if element_size is None else element_size
        return pad_multiple(e, self.config.levels, self.config.scan_window)

    def min_tile(self) -> int:
        """The smallest tile that gives the whole-image answer (0: none does, the reach is unbounded).

        Why: the windows bound the reach to about 1.5 windows (96 px for 64-px windows: a pixel's
        output moves by under 1e-4 of the range when the input changes further away), and a tile
        needs that context on both sides of the pixels it keeps; 6 windows measured within 0.25 %
        of the whole image with half-tile overlap, 4 windows up to 1 %.
        """
        cfg = self.config
        if not cfg.scan_window or not cfg.pool_window:
            return 0
        return 6 * max(cfg.scan_window, cfg.pool_window)

    def forward_multiscale(
        self,
        x: torch.Tensor,
        element_size: int | None = None,
        flux: str | None = None,
        full_only: bool = False,
    ) -> list[torch.Tensor]:
        """Outputs at 1/4, 1/2 and full resolution (coarse to fine), for padded-size input; with
        ``full_only`` just the full-resolution one (inference: the coarse heads serve the loss)."""
        e = self.config.element_size if element_size is None else element_size
        check_element_size(e, self.config.levels - 1)
        m = self.pad_multiple(e)
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"input sides must be multiples of {m} (use forward() to pad)")
        # Channels-last: 2-3x faster convolutions on CPU, and the layout the scan and norms want.
        x = x.contiguous(memory_format=torch.channels_last)
        scales = [x] + [F.avg_pool2d(x, 1 << i) for i in range(1, self.config.levels - 1)]
        feats, h = [], self.intro(x)
        for i, encoder in enumerate(self.encoders):
            h = encoder(h)
            if i < len(self.downs):
                feats.append(h)
                h = self.downs[i](h)
                if i + 1 < self.config.levels - 1:
                    h = h + self.injects[i](scales[i + 1])
        outputs = []
        for i in reversed(range(self.config.levels - 1)):
            h = self.fuses[i](torch.cat([self.ups[i](h), feats[i]], dim=1))
            for layer in self.decoders[i]:
                h = layer(h, e, i, flux)
            if i == 0 or not full_only:
                outputs.append(self.heads[i](h) + scales[i])
        return outputs

    def forward(
        self, x: torch.Tensor, element_size: int | None = None, flux: str | None = None
    ) -> torch.Tensor:
        """Full-resolution restoration of a (B, C, H, W) image of any size."""
        h, w = x.shape[-2:]
        m = self.pad_multiple(element_size)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.forward_multiscale(x, element_size, flux, full_only=True)[-1][..., :h, :w]
