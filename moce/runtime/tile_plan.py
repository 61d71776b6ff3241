"""How to cut one image: whole when it fits the memory budget, else the fewest, largest tiles that fit.

Time follows the pixels the network runs times the passes over them, so a fixed small tile
costs twice: every tile's overlap is run again, and image-wide sums need extra passes to agree
across tiles. With ``--tile auto`` an image runs untiled when :class:`MemoryModel` says its peak
fits the budget; otherwise the grid with the fewest tiles whose peak fits is chosen, its tiles
cut evenly (rectangular, a multiple of the model's stride), so no tile is mostly overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moce.errors import InputError
from moce.runtime.tiling import tiles_for

AUTO = "auto"
"""``--tile auto`` and ``--tile-passes auto``: chosen per image from the memory model."""

MIN_TILE = 128
"""The smallest tile side auto tiling cuts: below it a tile is mostly overlap."""

WHOLE_IMAGE_BYTES = 96.0
"""Bytes per image pixel held for the whole image while its tiles run: the float RGB input and
its padded copy (12 + 12), the blending canvas and weights (12 + 4), the restored float image
(12), its quantised output on the way to the encoder (up to 36 transient) and the decoded input.
Measured 63-79 on a 12-megapixel photo in 1024 and 512 px tiles (ONNX Runtime, freed memory kept;
``docs/performance.md``), so 96 leaves a margin."""

CPU_TILE_PIXELS = 1_150_000
"""The largest tile (in pixels) auto tiling cuts on the CPU: about 1024 x 1024. Larger tiles run
each pixel slower there (more fresh memory paged in, fewer cache hits): a 12-megapixel photo in one
pass took 21.5 s in 1024 px tiles, 27.3 s in 1536 px tiles and 35.6 s in two 3000 x 2016 tiles
(``docs/performance.md``). Device memory has no such cap: a GPU is busiest on the largest tile."""

AUTO_PASSES = 1
"""Tile passes under ``--tile auto``: a third of the time of three passes. One pass over a photo
in 12 tiles measured 50-56 dB against untiled on noise, rain, haze and blur, but 34.7 dB on low
light (50.4 with two passes; ``docs/performance.md``, "Tiling"): dark photos want
``--tile-passes 2``. An explicit ``--tile N`` keeps three passes."""

FIXED_PASSES = 3


@dataclass(frozen=True)
class MemoryModel:
    """Peak memory of a restore, as measured for one model, backend, precision and device.

    ``base``: bytes resident with the backend loaded, before any image; ``per_pixel``: bytes per
    pixel of what one inference call runs (its activations, and the buffers of an untiled image);
    ``image_per_pixel``: bytes per pixel of the whole image, held while its tiles run.
    """

    base: float
    per_pixel: float
    image_per_pixel: float = WHOLE_IMAGE_BYTES
    memory: str = "RAM"  # what the budget counts: RAM (resident set) or device memory

    def untiled(self, pixels: int, batch: int = 1) -> float:
        """Peak bytes restoring ``batch`` images of ``pixels`` in one call."""
        return self.base + self.per_pixel * pixels * batch

    def tiled(self, image_pixels: int, tile_pixels: int, batch: int = 1) -> float:
        """Peak bytes restoring an image of ``image_pixels`` in tiles of ``tile_pixels``, ``batch`` per call."""
        return self.base + self.per_pixel * tile_pixels * batch + self.image_per_pixel * image_pixels


@dataclass(frozen=True)
class TilePlan:
    """How one image runs: untiled (``tile_h`` None) or in ``tiles`` tiles of ``tile_h x tile_w``."""

    tile_h: int | None
    tile_w: int | None
    passes: int
    tiles: int
    reason: str
    estimate: float | None = None  # peak bytes the memory model expects

    @property
    def tiled(self) -> bool:
        return self.tile_h is not None

    def to_dict(self) -> dict[str, object]:
        tile = None if self.tile_h is None else f"{self.tile_h}x{self.tile_w}"
        estimate = None if self.estimate is None else round(self.estimate / 2**20)
        return {"tile": tile, "tiles": self.tiles, "passes": self.passes, "estimate_mib": estimate, "why": self.reason}


def gib(value: float) -> str:
    """Bytes as people read memory sizes: ``1.5 GiB``, ``640 MiB``."""
    return f"{value / 2**30:.1f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def fixed_plan(height: int, width: int, tile: int, overlap: int, passes: int) -> TilePlan:
    """``--tile N``: square tiles of ``N`` for an image (padded to the stride) whose longer side exceeds it."""
    if max(height, width) <= tile:
        return TilePlan(None, None, 1, 1, f"fits --tile {tile}")
    count = len(tiles_for(height, width, tile, overlap))
    return TilePlan(tile, tile, passes, count, f"--tile {tile}")


def even_side(length: int, parts: int, overlap: int, multiple: int) -> int:
    """The side of ``parts`` tiles covering ``length`` with ``overlap`` between them, a multiple of ``multiple``."""
    if parts == 1:
        return length
    side = math.ceil((length + (parts - 1) * overlap) / parts)
    return min(length, math.ceil(side / multiple) * multiple)


def auto_plan(
    height: int,
    width: int,
    *,
    model: MemoryModel,
    budget: float,
    overlap: int,
    multiple: int,
    batch: int = 1,
    passes: int | None = None,
    tiles_allowed: bool = True,
    max_tile_pixels: int | None = None,
) -> TilePlan:
    """``--tile auto`` for an image padded to ``height x width``: untiled when its peak fits
    ``budget`` bytes, else the grid of fewest tiles (then fewest pixels run) whose peak fits, each
    tile at most ``max_tile_pixels``."""
    pixels = height * width
    whole = model.untiled(pixels, batch)
    if whole <= budget:
        return TilePlan(None, None, 1, 1, f"untiled: needs about {gib(whole)} of {gib(budget)}", whole)
    if not tiles_allowed:
        raise InputError(
            f"{width}x{height} needs about {gib(whole)} untiled, over the memory budget of {gib(budget)}, and tiles "
            "run the split plan only; use --routing split or a larger --max-memory"
        )
    best = _fewest_tiles(height, width, model, budget, overlap, multiple, batch, max_tile_pixels or pixels)
    if best is None:
        smallest = model.tiled(pixels, MIN_TILE * MIN_TILE, batch)
        raise InputError(
            f"{width}x{height} needs about {gib(smallest)} even in {MIN_TILE} px tiles, over the memory budget of "
            f"{gib(budget)}; raise --max-memory or lower --batch"
        )
    count, _, tile_h, tile_w, need = best
    why = f"untiled needs about {gib(whole)}, over {gib(budget)}; {count} tiles need about {gib(need)}"
    if max_tile_pixels is not None:
        why += f", tiles of at most {max_tile_pixels / 1e6:.2f} MP (faster on the CPU)"
    return TilePlan(tile_h, tile_w, AUTO_PASSES if passes is None else passes, count, why, need)


def _fewest_tiles(
    height: int, width: int, model: MemoryModel, budget: float, overlap: int, multiple: int, batch: int, cap: int
) -> tuple[int, int, int, int, float] | None:
    """(tiles, pixels run, tile height, tile width, peak) of the best fitting grid, or None."""
    best = None
    floor = max(MIN_TILE, 2 * overlap + multiple)
    for rows in range(1, max(1, height // floor) + 1):
        tile_h = even_side(height, rows, overlap, multiple)
        if tile_h < min(floor, height):
            break
        for cols in range(1, max(1, width // floor) + 1):
            tile_w = even_side(width, cols, overlap, multiple)
            if tile_w < min(floor, width):
                break
            if rows * cols == 1:
                continue
            count = len(tiles_for(height, width, tile_h, overlap, tile_w))
            need = model.tiled(height * width, tile_h * tile_w, min(batch, count))
            if need > budget or tile_h * tile_w > cap:
                continue
            candidate = (count, count * tile_h * tile_w, tile_h, tile_w, need)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
            break  # more columns only add tiles
    return best
