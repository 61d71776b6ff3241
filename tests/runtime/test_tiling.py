"""Tiles cover the image, feathering blends seamlessly, and tiled restores track untiled ones."""

from __future__ import annotations

import numpy as np
import pytest

from moce.errors import InputError
from moce.metrics import psnr
from moce.runtime.executor import PlanExecutor
from moce.runtime.restorer import RestoreOptions, Restorer
from moce.runtime.runners import OnnxRuntimeRunner
from moce.runtime.tiling import Blender, check_tiling, core_masks, tile_starts, tiles_for
from tests.runtime.conftest import synthetic_photo


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(100, 256, 32), (256, 256, 32), (1000, 256, 32), (520, 256, 0)]
)
def test_tiles_cover_every_pixel_and_stay_inside(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for s in starts:
        assert 0 <= s and s + min(tile, length) <= length
        covered[s : s + min(tile, length)] = True
    assert covered.all()


def test_blending_identical_tiles_reproduces_the_image():
    rng = np.random.default_rng(0)
    image = rng.random((3, 300, 420)).astype(np.float32)
    blender = Blender(3, 300, 420, 32)
    for t in tiles_for(300, 420, 128, 32):
        blender.add(t, image[:, t.top : t.top + t.height, t.left : t.left + t.width])
    np.testing.assert_allclose(blender.result(), image, rtol=1e-6)


def test_bad_tiling_options():
    with pytest.raises(InputError, match="multiple of 8"):
        check_tiling(100, 16, 8)
    with pytest.raises(InputError, match="overlap"):
        check_tiling(128, 64, 8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(np.clip(a, 0, 1), np.clip(b, 0, 1))


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"), [(1024, 1024, 256, 32), (520, 776, 128, 24), (256, 96, 128, 8)]
)
def test_core_masks_own_every_pixel_once_on_the_size_multiple(height, width, tile, overlap):
    tiles = tiles_for(height, width, tile, overlap)
    owned = np.zeros((height, width), np.int32)
    for t, mask in core_masks(tiles, height, width, 8).items():
        owned[t.top : t.top + t.height, t.left : t.left + t.width] += mask[0].astype(np.int32)
        rows, cols = np.nonzero(mask[0])
        assert (rows.min() + t.top) % 8 == 0 and (cols.min() + t.left) % 8 == 0
    assert (owned == 1).all()


@pytest.fixture(scope="module")
def tiled_vs_untiled(tiny_pkg):
    image = synthetic_photo(1024, 1024)
    with OnnxRuntimeRunner(tiny_pkg) as runner:
        executor = PlanExecutor(tiny_pkg, runner)
        full = Restorer(executor, RestoreOptions(tile=1024)).restore_batch([image])[0]
        options = dict(tile=256, overlap=32, route_per="image", batch=4)
        tiled = Restorer(executor, RestoreOptions(**options)).restore_tiled(image)
        alone = Restorer(executor, RestoreOptions(**options, tile_passes=1)).restore_tiled(image)
    return full, tiled, alone


def test_tiled_1024_routes_once_per_image_like_the_untiled_pass(tiled_vs_untiled):
    full, tiled, _ = tiled_vs_untiled
    assert tiled.tiles == 25 * 3  # three passes over 25 tiles
    assert tiled.routes == full.routes
    assert all(route == tiled.routes for route in tiled.tile_routes)
    np.testing.assert_allclose(tiled.probs, full.probs, atol=1e-3)  # routed on image-wide sums


def test_tiled_1024_matches_untiled_once_tiles_share_image_sums(tiled_vs_untiled):
    """Tiles alone differ from the whole image everywhere (channel attention normalises over
    all pixels); three passes that share the image's sums bring them to the untiled result."""
    full, tiled, alone = tiled_vs_untiled
    shared, separate = _psnr(full.restored, tiled.restored), _psnr(full.restored, alone.restored)
    assert shared >= 45.0
    assert shared >= separate + 3.0


def test_tiled_1024_has_no_visible_seams(tiled_vs_untiled):
    """Whatever error is left sits near tile borders, but stays far below one 8-bit step."""
    full, tiled, _ = tiled_vs_untiled
    err = np.abs(np.clip(full.restored, 0, 1) - np.clip(tiled.restored, 0, 1))
    assert float(err.max()) < 4 / 255
