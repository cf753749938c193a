"""The one place that tiles: element-aligned overlapping tiles and feathered blending.

Why aligned: every tile starts on a multiple of ``net.pad_multiple(E)``, so each tile's element grid
is a piece of the whole image's grid; the same pixel falls in the same element whichever tile computes
it. Why feathered: the network sees less context near a tile's border, so in an overlap each tile's
weight ramps down (cosine, over the middle half; the outer quarter is left to the neighbour) towards
its own border and the two weights sum to one; inside a tile and
along the image's own edges the weight is flat, so nothing is attenuated there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

# Tiles on CPU: a tile's cost per pixel is about the same from 640 to 768 px (0.76 Mpx/s computed, 2
# cores), so what counts is the area computed twice in overlaps. For each plane, the tile of 640, 704
# or 768 px that covers it with the least computed area: 9 tiles of 768 for 2048² (0.60 Mpx/s,
# 0.95 GB peak) instead of 16 of 640 (0.48 Mpx/s, 0.79 GB). Planes over LARGE_PLANE are usually
# streamed from disk, and an 8192² run must stay under 1 GB (768-px tiles peak at 1.11 GB, 640 at
# 0.85): they use 640. The network's reach is bounded and tiles sit on its grid, so the tiling does
# not change the result.
AUTO_WHOLE_CPU = 768 * 768  # pixels: up to this a whole plane is one tile on CPU
AUTO_WHOLE_GPU = 2048 * 2048
AUTO_TILE = 640
AUTO_TILES_CPU = (640, 704, 768)
LARGE_PLANE = 4096 * 4096
# A tile's outermost 64-px window sees padding where the whole image has content; two windows of
# overlap keep the shipped model's tiled result within 0.3 % of the whole-image one (0.9 % with one).
MIN_OVERLAP = 128


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
    # Rounding down to the grid can land two starts on the same line: keep one (no duplicate tile).
    starts = sorted(set(starts))
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
    """The whole plane when it is small enough for the device; else, on CPU, the tile of
    ``AUTO_TILES_CPU`` that computes the least area for this plane (``AUTO_TILE`` over ``LARGE_PLANE``)."""
    height, width = shape
    whole = AUTO_WHOLE_GPU if device_type == "cuda" else AUTO_WHOLE_CPU
    if height * width <= whole:
        return round_up(max(height, width), multiple)
    if device_type == "cuda" or height * width > LARGE_PLANE:
        return round_up(AUTO_TILE, multiple)

    def computed_area(tile: int) -> int:
        tiles = plan_tiles(shape, tile, auto_overlap(tile, multiple), multiple)
        return sum(t.shape[0] * t.shape[1] for t in tiles)

    return min(sorted({round_up(t, multiple) for t in AUTO_TILES_CPU}), key=computed_area)


def auto_overlap(tile: int, multiple: int, min_tile: int = 0) -> int:
    """About 1/8 of the tile, at least 128 px, at most half the tile, on the grid; half the tile
    when the tile is under 4/3 of the network's ``min_tile`` (its kept centre needs the context)."""
    half = tile // 2 // multiple * multiple
    if min_tile and 3 * tile < 4 * min_tile:
        return half
    return min(round_up(max(MIN_OVERLAP, tile // 8), multiple), half)


# The outer quarter of an overlap is where a tile's output is worst (its context is padding there): it
# gets almost no weight, the neighbour almost all; the cosine blend runs over the middle half. With the
# whole overlap blended, 256-px tiles of the shipped default differed from the whole image by up to
# 1.05 % of the range; with the outer quarters left to the neighbour, by 0.4 %.
DEAD_FRACTION = 0.25
DEAD_WEIGHT = 1e-3  # not 0: every weight stays positive, so no pixel can end up with none


def _up(before: int) -> np.ndarray:
    """Weights rising across an overlap of ``before`` px; the neighbour's fall is ``1 - _up``."""
    t = (np.arange(before, dtype=np.float64) + 0.5) / before  # half-pixel offsets: symmetric
    s = np.clip((t - DEAD_FRACTION) / (1 - 2 * DEAD_FRACTION), 0.0, 1.0)
    return DEAD_WEIGHT + (1 - 2 * DEAD_WEIGHT) * (0.5 - 0.5 * np.cos(np.pi * s))


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    w = np.ones(length, dtype=np.float64)
    if before:
        w[:before] = _up(before)
    if after:
        w[length - after :] *= 1.0 - _up(after)
    return w.astype(np.float32)


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


class BandBlender:
    """Blends one plane's tiles row band by row band, so only a band of rows is ever held.

    Why: a 30k x 30k slide does not fit in memory as float32, but tiles arrive in row-major order, so
    rows above the next band's first row are final and can be written out. Each pixel gets exactly
    the same additions, in the same order, as in :class:`Blender`: the result is bit-identical.
    """

    def __init__(self, width: int):
        self.top = 0  # plane row of the buffers' first row
        self.out = np.zeros((0, int(width)), dtype=np.float32)
        self.weight = np.zeros((0, int(width)), dtype=np.float32)
        self.max_rows = 0

    def _grow(self, bottom: int) -> None:
        extra = bottom - self.top - self.out.shape[0]
        if extra > 0:
            pad = np.zeros((extra, self.out.shape[1]), dtype=np.float32)
            self.out = np.concatenate([self.out, pad])
            self.weight = np.concatenate([self.weight, pad])
            self.max_rows = max(self.max_rows, self.out.shape[0])

    def add(self, tile: Tile, values: np.ndarray) -> None:
        if tile.y0 < self.top:
            raise RuntimeError("tile starts above rows already released")
        self._grow(tile.y1)
        w = tile_weight(tile)
        ys, xs = slice(tile.y0 - self.top, tile.y1 - self.top), slice(tile.x0, tile.x1)
        self.out[ys, xs] += w * values
        self.weight[ys, xs] += w

    def release(self, upto: int) -> tuple[int, np.ndarray]:
        """``(first row, blended rows)`` for rows ``[top, upto)``; no later tile may touch them."""
        n = int(upto) - self.top
        self._grow(upto)
        out, weight = self.out[:n], self.weight[:n]
        if not np.all(weight > 0):  # a planning bug, never the user's fault
            raise RuntimeError("tiles do not cover the plane")
        rows, top = out / weight, self.top
        self.out, self.weight, self.top = self.out[n:].copy(), self.weight[n:].copy(), int(upto)
        return top, rows


def tile_rows(tiles: list[Tile]) -> list[list[Tile]]:
    """Tiles grouped by row span, in plan order (``plan_tiles`` is row-major)."""
    rows: list[list[Tile]] = []
    for t in tiles:
        if rows and (rows[-1][0].y0, rows[-1][0].y1) == (t.y0, t.y1):
            rows[-1].append(t)
        else:
            rows.append([t])
    return rows


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
    "BandBlender",
    "Blender",
    "Tile",
    "auto_overlap",
    "auto_tile",
    "halve_tile",
    "plan_tiles",
    "tile_rows",
    "tile_weight",
]
