"""A NAFNet-style CNN baseline at a chosen parameter budget (for `dgno bench`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, NAFBlock, Upsample
from .config import NAFNetConfig


class NAFNet(nn.Module):
    def __init__(self, config: NAFNetConfig):
        super().__init__()
        self.config = config
        c = config.width
        self.intro = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        for n in config.enc_blocks:
            self.encoders.append(nn.Sequential(*(NAFBlock(c) for _ in range(n))))
            self.downs.append(Downsample(c))
            c *= 2
        self.middle = nn.Sequential(*(NAFBlock(c) for _ in range(config.middle_blocks)))
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for n in config.dec_blocks:
            self.ups.append(Upsample(c))
            c //= 2
            self.decoders.append(nn.Sequential(*(NAFBlock(c) for _ in range(n))))
        self.ending = nn.Conv2d(c, config.in_channels, 3, padding=1)

    def pad_multiple(self, element_size: int | None = None) -> int:
        return 1 << len(self.config.enc_blocks)

    def forward_multiscale(self, x, element_size=None, flux=None) -> list[torch.Tensor]:
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
