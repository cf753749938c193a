"""The element partition: cutting a feature map into non-overlapping element blocks and back.

Element blocks are square in pixels at full resolution and therefore ``E / 2**level`` tokens wide at a
decoder level; ``element_tokens`` turns the user's element size into that per-level block size. Size 0
is the single, global element.
"""

from __future__ import annotations

import math

import torch


def element_tokens(element_size: int, level: int, height: int, width: int) -> tuple[int, int]:
    """Block size (rows, cols) in tokens at ``level`` for an element of ``element_size`` pixels."""
    if element_size == 0:
        return height, width
    side = max(1, element_size >> level)
    if height % side or width % side:
        raise ValueError(f"feature map {height}x{width} is not a whole number of {side}-token elements")
    return side, side


def pad_multiple(element_size: int, levels: int) -> int:
    """Image sides must be multiples of this: whole elements, and divisible through the U-Net."""
    down = 1 << (levels - 1)
    return down if element_size == 0 else math.lcm(down, element_size)


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
