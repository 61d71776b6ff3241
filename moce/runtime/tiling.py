"""Overlapping tiles with feathered blending, so large images restore without seams."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from moce.errors import InputError


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``length``; the last tile is aligned to the end (no partial tile)."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def check_tiling(tile: int, overlap: int, multiple: int) -> None:
    if tile < multiple:
        raise InputError(f"--tile must be a positive multiple of {multiple}, got {tile}")
    if tile % multiple:
        raise InputError(f"--tile must be a multiple of {multiple}, got {tile}")
    if not 0 <= overlap < tile // 2:
        raise InputError(f"--overlap must be in [0, tile/2), got {overlap} for tile {tile}")


def tiles_for(height: int, width: int, tile: int, overlap: int, tile_w: int | None = None) -> list[Tile]:
    """Tiles of ``tile x tile`` (or ``tile x tile_w``) covering the image, row by row."""
    tile_w = tile if tile_w is None else tile_w
    return [
        Tile(top, left, min(tile, height), min(tile_w, width))
        for top in tile_starts(height, tile, overlap)
        for left in tile_starts(width, tile_w, overlap)
    ]


def _cores(starts: list[int], tile: int, length: int, multiple: int) -> dict[int, tuple[int, int]]:
    """Each start's owned span: overlaps split at their middle, on a multiple of ``multiple``."""
    ends = [min(s + tile, length) for s in starts]
    cuts = [0] + [max(s, min(e, (e + s) // 2 // multiple * multiple)) for e, s in zip(ends, starts[1:])] + [length]
    return {s: (cuts[i], cuts[i + 1]) for i, s in enumerate(starts)}


def core_masks(tiles: list[Tile], height: int, width: int, multiple: int) -> dict[Tile, np.ndarray]:
    """``[1, h, w]`` masks, 1 where a tile owns the pixel: together they cover the image once.

    Tiles report their share of image-wide sums over these cores (moce.model.global_stats).
    """
    tile_h, tile_w = max(t.height for t in tiles), max(t.width for t in tiles)
    rows = _cores(sorted({t.top for t in tiles}), tile_h, height, multiple)
    cols = _cores(sorted({t.left for t in tiles}), tile_w, width, multiple)
    masks = {}
    for t in tiles:
        (r0, r1), (c0, c1) = rows[t.top], cols[t.left]
        mask = np.zeros((1, t.height, t.width), dtype=np.float32)
        mask[:, r0 - t.top : r1 - t.top, c0 - t.left : c1 - t.left] = 1.0
        masks[t] = mask
    return masks


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1 in the middle, rising over ``overlap`` pixels at each edge that meets another tile."""
    weights = np.ones(length, dtype=np.float32)
    if overlap == 0:
        return weights
    rise = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if ramp_start:
        weights[:overlap] = np.minimum(weights[:overlap], rise)
    if ramp_end:
        weights[-overlap:] = np.minimum(weights[-overlap:], rise[::-1])
    return weights


def feather(tile: Tile, height: int, width: int, overlap: int) -> np.ndarray:
    """Blend weights [h, w] of ``tile``: edges on the image border keep full weight."""
    rows = _ramp(tile.height, overlap, tile.top > 0, tile.top + tile.height < height)
    cols = _ramp(tile.width, overlap, tile.left > 0, tile.left + tile.width < width)
    return np.outer(rows, cols)


class Blender:
    """Accumulates weighted tile outputs into a CHW canvas and normalises once at the end."""

    def __init__(self, channels: int, height: int, width: int, overlap: int) -> None:
        self.sum = np.zeros((channels, height, width), dtype=np.float32)
        self.weight = np.zeros((height, width), dtype=np.float32)
        self.height, self.width, self.overlap = height, width, overlap

    def add(self, tile: Tile, output: np.ndarray) -> None:
        w = feather(tile, self.height, self.width, self.overlap)
        region = (slice(tile.top, tile.top + tile.height), slice(tile.left, tile.left + tile.width))
        self.sum[(slice(None), *region)] += output * w
        self.weight[region] += w

    def result(self) -> np.ndarray:
        return self.sum / self.weight


def batches(items: list[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
