"""--tile auto: untiled when the image fits the budget, else the fewest tiles that fit, cut evenly."""

from __future__ import annotations

import numpy as np
import pytest

from moce.errors import InputError
from moce.runtime.tile_plan import AUTO_PASSES, MIN_TILE, MemoryModel, auto_plan, even_side, fixed_plan
from moce.runtime.tiling import tiles_for

MODEL = MemoryModel(base=200e6, per_pixel=1600.0)  # about the demo model on ONNX Runtime
GIB = 2**30


def _plan(height: int, width: int, budget: float, **kw):
    return auto_plan(height, width, model=MODEL, budget=budget, overlap=32, multiple=8, **kw)


def test_an_image_that_fits_runs_untiled():
    plan = _plan(1080, 1920, 12 * GIB)
    assert not plan.tiled and plan.tiles == 1
    assert plan.estimate == pytest.approx(MODEL.untiled(1080 * 1920))
    assert "untiled" in plan.reason


@pytest.mark.parametrize(
    ("height", "width", "budget"), [(3000, 4000, 11 * GIB), (3000, 4000, 2 * GIB), (1080, 1920, GIB)]
)
def test_the_fewest_tiles_that_fit_the_budget_cover_the_image(height, width, budget):
    plan = _plan(height, width, budget)
    assert plan.tiled and plan.passes == AUTO_PASSES
    assert plan.tile_h % 8 == 0 and plan.tile_w % 8 == 0
    assert plan.estimate <= budget
    tiles = tiles_for(height, width, plan.tile_h, 32, plan.tile_w)
    assert len(tiles) == plan.tiles
    covered = np.zeros((height, width), bool)
    for t in tiles:
        covered[t.top : t.top + t.height, t.left : t.left + t.width] = True
    assert covered.all()
    # one tile fewer never fits: every grid with fewer tiles needs more than the budget
    for rows in range(1, 40):
        for cols in range(1, 40):
            if rows * cols >= plan.tiles:
                break
            side_h, side_w = even_side(height, rows, 32, 8), even_side(width, cols, 32, 8)
            assert MODEL.tiled(height * width, side_h * side_w) > budget or rows * cols == 1


def test_a_tile_cap_gives_more_smaller_tiles():
    capped = _plan(3000, 4000, 11 * GIB, max_tile_pixels=1_150_000)
    assert capped.tile_h * capped.tile_w <= 1_150_000
    assert capped.tiles > _plan(3000, 4000, 11 * GIB).tiles
    assert capped.tiles == 12  # 3 x 4 tiles of 1024 x 1024


def test_tiles_are_cut_evenly_not_mostly_overlap():
    plan = _plan(3000, 4000, 11 * GIB)
    tiles = tiles_for(3000, 4000, plan.tile_h, 32, plan.tile_w)
    run = sum(t.height * t.width for t in tiles)
    assert run < 1.05 * 3000 * 4000  # a square 2048 tile would run 16.8 MP for 12 MP


def test_a_batch_of_tiles_counts_against_the_budget():
    one, four = _plan(3000, 4000, 4 * GIB), _plan(3000, 4000, 4 * GIB, batch=4)
    assert four.tiles > one.tiles
    assert four.estimate <= 4 * GIB


def test_nothing_fits_is_one_clear_error():
    with pytest.raises(InputError, match=rf"4000x3000 needs about .* even in {MIN_TILE} px tiles.*--max-memory"):
        _plan(3000, 4000, 0.5 * GIB)


def test_tiles_that_need_the_split_plan_are_refused_for_other_forms():
    with pytest.raises(InputError, match="split plan only"):
        _plan(3000, 4000, 2 * GIB, tiles_allowed=False)


def test_explicit_passes_are_kept():
    assert _plan(3000, 4000, 2 * GIB, passes=3).passes == 3


@pytest.mark.parametrize(("length", "parts"), [(3000, 2), (4000, 3), (1080, 5), (520, 1)])
def test_even_sides_cover_the_length_in_that_many_tiles(length, parts):
    side = even_side(length, parts, 32, 8)
    assert side % 8 == 0 or side == length
    assert len(tiles_for(length, 8, side, 32)) == parts


def test_fixed_tiles_are_the_square_tiles_of_before():
    assert not fixed_plan(512, 512, 512, 32, 3).tiled
    plan = fixed_plan(1080, 1920, 512, 32, 3)
    assert (plan.tile_h, plan.tile_w, plan.passes) == (512, 512, 3)
    assert plan.tiles == len(tiles_for(1080, 1920, 512, 32)) == 12
