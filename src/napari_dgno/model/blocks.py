"""Small building blocks shared by DGNO and the NAFNet baseline (after NAFNet's compact blocks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channels_last_weights(net: nn.Module) -> nn.Module:
    """Lay out every 4-D weight channels-last, in place; returns ``net``.

    Why the weights and not only the input: a 1-channel image is both layouts at once, and then a
    convolution follows its weights' layout. With default weights the first convolution went back to
    channels-first and the whole network stayed there: every layer norm, upsampling and convolution
    backward paid a layout copy. Training steps became 20 % faster, inference 25-30 %.
    Loading a checkpoint copies into these tensors, so the layout survives ``load_state_dict``.
    """
    return net.to(memory_format=torch.channels_last)


_ONEDNN = torch.backends.mkldnn.is_available()


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution that takes oneDNN on the CPU whatever the batch size and thread count.

    Why: for one thread and a batch under 16, PyTorch picks its im2col path
    (``_slow_conv2d_forward``), which took a third of a one-thread 512² pass; oneDNN is 1.1-3x
    faster on these shapes, and the output no longer depends on the thread count. Elsewhere (GPU,
    meta, half precision, autocast) it is ``F.conv2d``. Autograd comes with the oneDNN op.
    """
    if (
        _ONEDNN
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
    ):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, [0, 0], [1, 1], [1, 1], 1)
    return F.conv2d(x, weight, bias)


class Pointwise(nn.Conv2d):
    """``nn.Conv2d(cin, cout, 1)`` through ``pointwise``: same parameters, so checkpoints load as before."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight, self.bias)


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of a (B, C, H, W) tensor.

    Why through a permute: the networks run channels-last, where (B, H, W, C) is the contiguous view
    and ``F.layer_norm`` is one fused kernel instead of five passes over the tensor.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _box_sum(x: torch.Tensor, dim: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over a centred window of ``size`` along ``dim`` (clipped at the ends), and the counts."""
    n = x.shape[dim]
    idx = torch.arange(n, device=x.device)
    hi = torch.clamp(idx + size - size // 2, max=n)
    lo = torch.clamp(idx - size // 2, min=0)
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    c = torch.cat([zero, torch.cumsum(x, dim)], dim)
    return c.index_select(dim, hi) - c.index_select(dim, lo), (hi - lo).to(x.dtype)


def local_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over the ``size`` x ``size`` box around each pixel, clipped at the border.

    Why: NAFNet's channel attention pools the whole image, so a pixel's result depends on the whole
    input (tile size, field of view). A bounded box keeps the statistic local, the idea of its
    authors' test-time local converter, built into training. Prefix sums make it O(1) per pixel.
    """
    s, count_h = _box_sum(x, -2, size)
    s, count_w = _box_sum(s, -1, size)
    return s / (count_h[:, None] * count_w[None, :])


class CoarseLocalMean(nn.Module):
    """``local_mean`` over ``size`` tokens, computed on a grid ``size / 8`` times coarser.

    Why coarse: the statistic is smooth by construction, so averaging 8x8 cells of the grid and
    interpolating back costs two passes over the full-resolution tensor instead of eight, with the
    same bounded reach. Cells sit on the image grid, so grid-aligned tiles see the same cells.
    """

    def __init__(self, size: int):
        super().__init__()
        self.stride = max(1, size // 8)
        self.size = max(1, size // self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return local_mean(x, self.size)


class Interpolate(nn.Module):
    """Bilinear upsampling by an integer factor (identity for 1)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


class SimpleGate(nn.Module):
    """NAFNet's activation: split channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block: depthwise conv + simple gate + simplified channel attention, then a gated FFN.

    ``pool`` is the side (in tokens) of the neighbourhood the channel attention averages over; 0
    pools the whole image, as NAFNet does.
    """

    def __init__(self, channels: int, expand: int = 2, pool: int = 0):
        super().__init__()
        hidden = channels * expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = Pointwise(channels, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.gate = SimpleGate()
        conv = Pointwise(hidden // 2, hidden // 2)
        if pool:  # the channel mix is linear, so it runs on the coarse grid before interpolating back
            mean = CoarseLocalMean(pool)
            self.attention = nn.Sequential(mean, conv, Interpolate(mean.stride))
        else:
            self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv)
        self.conv2 = Pointwise(hidden // 2, channels)
        self.norm2 = LayerNorm2d(channels)
        self.ffn1 = Pointwise(channels, hidden)
        self.ffn2 = Pointwise(hidden // 2, channels)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.gate(self.dwconv(self.conv1(self.norm1(x))))
        y = self.conv2(y * self.attention(y))
        x = torch.addcmul(x, self.beta, y)  # x + beta * y in one pass over the feature map
        y = self.ffn2(self.gate(self.ffn1(self.norm2(x))))
        return torch.addcmul(x, self.gamma, y)


class GatedFFN(nn.Module):
    """Restormer's gated depthwise feed-forward network, used after attention and scan mixers."""

    def __init__(self, channels: int, expand: float = 2.0):
        super().__init__()
        hidden = int(channels * expand)
        self.project_in = Pointwise(channels, hidden * 2)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2)
        self.project_out = Pointwise(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(nn.functional.gelu(a) * b)


class Downsample(nn.Module):
    """Halve the resolution and double the channels (strided conv)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


RESAMPLE_MODES = ("shuffle", "bilinear")


class Upsample(nn.Module):
    """Double the resolution and halve the channels.

    ``shuffle`` (1x1 conv + pixel shuffle) gives each of the four sub-pixel phases its own weights,
    and a trained network prints that 2-px period, compounded over levels into 4- and 8-px textures.
    ``bilinear`` interpolates first and mixes channels after, so every phase is treated alike.
    """

    def __init__(self, channels: int, mode: str = "shuffle"):
        super().__init__()
        if mode not in RESAMPLE_MODES:
            raise ValueError(f"upsampling must be one of {RESAMPLE_MODES}, got {mode!r}")
        self.mode = mode
        if mode == "shuffle":
            self.conv = Pointwise(channels, channels * 2)
            self.shuffle = nn.PixelShuffle(2)
        else:
            self.conv = Pointwise(channels, channels // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "shuffle":
            return self.shuffle(self.conv(x))
        # Mixing channels before interpolating costs 4x less and is the same linear map.
        return F.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=False)
