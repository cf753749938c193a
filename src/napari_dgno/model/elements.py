"""The element partition: cutting a feature map into non-overlapping element blocks and back.

Element blocks are square in pixels at full resolution and therefore ``E / 2**level`` tokens wide at a
decoder level; ``element_tokens`` turns the user's element size into that per-level block size. Size 0
is the single, global element.
"""

from __future__ import annotations

import math

import torch


def _block_tokens(pixels: int, level: int, height: int, width: int, what: str) -> tuple[int, int]:
    """(rows, cols) in tokens at ``level`` of a square block of ``pixels`` (0 = the whole map)."""
    if pixels == 0:
        return height, width
    side = max(1, pixels >> level)
    if height % side or width % side:
        raise ValueError(f"feature map {height}x{width} is not a whole number of {side}-token {what}")
    return side, side


def element_tokens(element_size: int, level: int, height: int, width: int) -> tuple[int, int]:
    """Block size (rows, cols) in tokens at ``level`` for an element of ``element_size`` pixels."""
    return _block_tokens(element_size, level, height, width, "elements")


def pad_multiple(element_size: int, levels: int, window: int = 0) -> int:
    """Image sides must be multiples of this: whole elements and scan windows, and divisible through
    the U-Net. Tiles start on multiples of it, so that every tile sees the whole image's grid."""
    return math.lcm(1 << (levels - 1), element_size or 1, window or 1)


def to_elements(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, heads, d, H, W) -> (B, heads, nh, nw, rows * cols, d)."""
    b, h, d, height, width = t.shape
    t = t.reshape(b, h, d, height // rows, rows, width // cols, cols)
    return t.permute(0, 1, 3, 5, 4, 6, 2).reshape(b, h, height // rows, width // cols, rows * cols, d)


def from_elements(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, heads, nh, nw, rows * cols, d) -> (B, heads, d, H, W); the inverse of ``to_elements``."""
    b, h, nh, nw, _, d = t.shape
    t = t.reshape(b, h, nh, nw, rows, cols, d).permute(0, 1, 6, 2, 4, 3, 5)
    return t.reshape(b, h, d, nh * rows, nw * cols)


def window_tokens(window: int, level: int, height: int, width: int) -> tuple[int, int]:
    """Scan-window size (rows, cols) in tokens at ``level`` for windows of ``window`` pixels (0 = the
    whole feature map)."""
    return _block_tokens(window, level, height, width, "windows")


def to_windows(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, C, H, W) -> (rows * cols, B * nh * nw, C): tokens of each window, time first.

    Time first because the scan walks the first axis; each step is then one contiguous slice.
    """
    b, c, height, width = x.shape
    nh, nw = height // rows, width // cols
    t = x.permute(0, 2, 3, 1).reshape(b, nh, rows, nw, cols, c)
    return t.permute(2, 4, 0, 1, 3, 5).reshape(rows * cols, b * nh * nw, c)


def from_windows(t: torch.Tensor, batch: int, height: int, width: int, rows: int, cols: int) -> torch.Tensor:
    """The inverse of ``to_windows``; the result is a channels-last (B, C, H, W) tensor."""
    c = t.shape[-1]
    nh, nw = height // rows, width // cols
    t = t.reshape(rows, cols, batch, nh, nw, c).permute(2, 3, 0, 4, 1, 5)
    return t.reshape(batch, height, width, c).permute(0, 3, 1, 2)
