"""A NAFNet-style CNN baseline at a chosen parameter budget (for `dgno bench`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, NAFBlock, Upsample, channels_last_weights
from .config import NAFNetConfig


class NAFNet(nn.Module):
    def __init__(self, config: NAFNetConfig):
        super().__init__()
        self.config = config
        c, levels = config.width, len(config.enc_blocks)
        pools = [max(1, config.pool_window >> i) if config.pool_window else 0 for i in range(levels + 1)]
        self.intro = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        for level, n in enumerate(config.enc_blocks):
            self.encoders.append(nn.Sequential(*(NAFBlock(c, pool=pools[level]) for _ in range(n))))
            self.downs.append(Downsample(c))
            c *= 2
        self.middle = nn.Sequential(*(NAFBlock(c, pool=pools[levels]) for _ in range(config.middle_blocks)))
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for level, n in zip(reversed(range(levels)), config.dec_blocks, strict=True):
            self.ups.append(Upsample(c, config.upsample))
            c //= 2
            self.decoders.append(nn.Sequential(*(NAFBlock(c, pool=pools[level]) for _ in range(n))))
        self.ending = nn.Conv2d(c, config.in_channels, 3, padding=1)
        channels_last_weights(self)

    def pad_multiple(self, element_size: int | None = None) -> int:
        return math.lcm(1 << len(self.config.enc_blocks), self.config.pool_window or 1)

    def forward_multiscale(self, x, element_size=None, flux=None) -> list[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)  # 2-3x faster convolutions on CPU
        h, skips = self.intro(x), []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            h = decoder(up(h) + skip)
        return [self.ending(h) + x]

    def forward(self, x, element_size=None, flux=None) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.pad_multiple()
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        return self.forward_multiscale(x)[-1][..., :h, :w]
