"""The one place that tiles: element-aligned overlapping tiles and feathered blending.

Why aligned: every tile starts on a multiple of ``net.pad_multiple(E)``, so each tile's element grid
is a piece of the whole image's grid; the same pixel falls in the same element whichever tile computes
it. Why feathered: the network sees less context near a tile's border, so in an overlap each tile's
weight ramps down (cosine) towards its own border and the two weights sum to one; inside a tile and
along the image's own edges the weight is flat, so nothing is attenuated there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

AUTO_WHOLE_CPU = 1024 * 1024  # pixels: below this a whole plane is one tile on CPU
AUTO_WHOLE_GPU = 2048 * 2048
AUTO_TILE = 512
MIN_OVERLAP = 32


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


@dataclass(frozen=True)
class Tile:
    """A window ``[y0:y1, x0:x1]`` of a plane and the lengths of its four blending ramps."""

    y0: int
    y1: int
    x0: int
    x1: int
    ramps: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def _axis_spans(n: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    """Spans along one axis: as few as the stride allows, spread evenly over ``[0, n]`` with starts
    rounded down to ``multiple``. Consecutive spans overlap by at least ``overlap`` (gaps are
    multiples of ``multiple`` below ``stride + multiple``); the last ends at ``n`` and is between
    ``tile`` and ``tile + multiple - 1`` long."""
    if n <= tile:
        return [(0, n)]
    stride = tile - overlap
    count = 1 + -(-(n - tile) // stride)
    starts = [(j * (n - tile) // (count - 1)) // multiple * multiple for j in range(count)]
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], n)]


def _ramps(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(before, after) ramp length of each span: its overlap with the previous / next span."""
    out = []
    for i, (a, b) in enumerate(spans):
        before = spans[i - 1][1] - a if i > 0 else 0
        after = b - spans[i + 1][0] if i + 1 < len(spans) else 0
        out.append((max(before, 0), max(after, 0)))
    return out


def plan_tiles(shape: tuple[int, int], tile: int, overlap: int, multiple: int = 1) -> list[Tile]:
    """Tiles covering a ``(H, W)`` plane; ``tile`` and ``overlap`` are rounded up to ``multiple``.

    A side no longer than ``tile`` is one span; otherwise spans of ``tile`` pixels are spread evenly
    with starts on the grid, overlapping by at least ``overlap``; the last one runs to the edge.
    """
    height, width = (int(s) for s in shape)
    multiple = max(1, int(multiple))
    tile = round_up(max(int(tile), multiple), multiple)
    overlap = round_up(max(int(overlap), 0), multiple)
    if overlap >= tile:
        raise InputError(f"overlap ({overlap} px) must be smaller than the tile ({tile} px)")
    ys = _axis_spans(height, tile, overlap, multiple)
    xs = _axis_spans(width, tile, overlap, multiple)
    return [
        Tile(y0, y1, x0, x1, (top, bottom, left, right))
        for (y0, y1), (top, bottom) in zip(ys, _ramps(ys), strict=True)
        for (x0, x1), (left, right) in zip(xs, _ramps(xs), strict=True)
    ]


def auto_tile(shape: tuple[int, int], multiple: int, device_type: str = "cpu") -> int:
    """The whole plane when it is small enough for the device, else ~512 px (a multiple of the grid)."""
    height, width = shape
    whole = AUTO_WHOLE_GPU if device_type == "cuda" else AUTO_WHOLE_CPU
    if height * width <= whole:
        return round_up(max(height, width), multiple)
    return round_up(AUTO_TILE, multiple)


def auto_overlap(tile: int, multiple: int) -> int:
    """About 1/8 of the tile, at least 32 px, on the grid."""
    return round_up(max(MIN_OVERLAP, tile // 8), multiple)


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    w = np.ones(length, dtype=np.float32)
    # Half-pixel offsets keep every weight strictly positive, and up(t) + down(t) == 1 in an overlap.
    if before:
        t = (np.arange(before, dtype=np.float32) + 0.5) / before
        w[:before] = 0.5 - 0.5 * np.cos(np.pi * t)
    if after:
        t = (np.arange(after, dtype=np.float32) + 0.5) / after
        w[length - after :] *= 0.5 + 0.5 * np.cos(np.pi * t)
    return w


def tile_weight(tile: Tile) -> np.ndarray:
    """The (h, w) blending weight of a tile: cosine ramps over its overlaps, flat elsewhere."""
    h, w = tile.shape
    top, bottom, left, right = tile.ramps
    return np.outer(_ramp(h, top, bottom), _ramp(w, left, right))


class Blender:
    """Accumulates weighted tile outputs into one plane: ``add`` each tile, then ``result``."""

    def __init__(self, shape: tuple[int, int]):
        self.out = np.zeros(shape, dtype=np.float32)
        self.weight = np.zeros(shape, dtype=np.float32)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        w = tile_weight(tile)
        ys, xs = tile.slices
        self.out[ys, xs] += w * values
        self.weight[ys, xs] += w

    def result(self) -> np.ndarray:
        if not np.all(self.weight > 0):  # a planning bug, never the user's fault
            raise RuntimeError("tiles do not cover the plane")
        return self.out / self.weight


def halve_tile(tile: int, multiple: int, minimum: int = 64) -> int | None:
    """The next smaller tile after an out-of-memory error, or None when there is no smaller one."""
    smaller = max(multiple, (tile // 2) // multiple * multiple)
    floor = round_up(minimum, multiple)
    if smaller >= tile or tile <= floor:
        return None
    return max(smaller, floor)


def describe(tiles: list[Tile]) -> str:
    rows = len({t.y0 for t in tiles})
    cols = len({t.x0 for t in tiles})
    big = max(max(t.shape) for t in tiles)
    return f"{rows}x{cols} tiles of up to {big} px" if len(tiles) > 1 else f"one tile of {big} px"


__all__ = [
    "Blender",
    "Tile",
    "auto_overlap",
    "auto_tile",
    "halve_tile",
    "plan_tiles",
    "tile_weight",
]
