"""--tile auto: the memory model is measured once, bounds measured peaks, and plans each image."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import moce
from moce.apps import memory
from moce.apps.bench_tiling import TilingBench, run_tiling_bench
from moce.apps.memory import memory_model, probe_spec
from moce.apps.session_options import SessionOptions
from moce.cli.main import app
from moce.metrics import psnr
from moce.runtime.restorer import SMALL
from tests.runtime.conftest import synthetic_photo

PEAK_MARGIN = 1.05
"""Measured peaks may pass the model's estimate by at most 5% (the allocator's steps)."""


def _spec(pkg):
    return probe_spec(pkg, "onnxruntime", "cpu", SessionOptions(backend="onnxruntime"))


def test_the_model_is_measured_once_then_read_from_the_cache(tiny_pkg, monkeypatch):
    said = []
    first = memory_model(tiny_pkg, _spec(tiny_pkg), said.append)
    assert first.base > 0 and first.per_pixel > 0 and first.memory == "RAM"
    monkeypatch.setattr(memory, "measure", lambda spec: pytest.fail("measured twice"))
    assert memory_model(tiny_pkg, _spec(tiny_pkg), said.append) == first
    assert len([s for s in said if "measuring" in s]) <= 1


@pytest.mark.parametrize(
    ("tiling", "size", "budget"),
    [("untiled", (1024, 1536), None), ("auto", (1536, 2048), 700 * 2**20), ("auto", (1024, 1024), None)],
)
def test_the_model_bounds_the_peak_memory_of_a_restore(tiny_pkg, tiling, size, budget):
    """The estimate is what --tile auto plans with: a restore's measured peak stays under it (with
    the stated margin) and the estimate is not wildly above it either."""
    bench = TilingBench([tiling], [size], session=SessionOptions(backend="onnxruntime", threads=1, max_memory=budget))
    (result,) = run_tiling_bench(tiny_pkg.root, bench)
    model = memory_model(tiny_pkg, _spec(tiny_pkg))
    pixels = size[0] * size[1]
    plan = result.plan
    if plan["tile"] is None:
        estimate = model.untiled(pixels)
    else:
        tile_h, tile_w = map(int, plan["tile"].split("x"))
        estimate = model.tiled(pixels, tile_h * tile_w)
    assert result.peak_bytes <= PEAK_MARGIN * estimate
    assert result.peak_bytes >= 0.5 * estimate
    if budget is not None:
        assert plan["tile"] is not None and result.peak_bytes <= budget


class Recorder:
    def __init__(self) -> None:
        self.total, self.done = [], 0

    def start(self, images: int) -> None: ...
    def image_done(self, path, status: str) -> None: ...
    def message(self, text: str) -> None: ...

    def tiles(self, total: int) -> None:
        self.total.append(total)

    def tile_done(self, count: int) -> None:
        self.done += count


def test_progress_inside_a_tiled_image_reaches_the_api_callback(tiny_pkg):
    image = synthetic_photo(300, 420)
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1, tile=128, tile_passes=2) as session:
        recorder = Recorder()
        result = session.restore(image, progress=recorder)
    assert recorder.total == [result.tiles] and result.tiles == 2 * len(result.tile_routes)
    assert recorder.done == result.tiles
    assert result.plan is not None and result.plan.tiled


def test_auto_runs_an_image_that_fits_untiled_and_one_that_does_not_in_tiles(tiny_pkg):
    image = synthetic_photo(640, 800)
    assert 640 * 800 > SMALL
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as session:
        whole = session.restore(image)
        model = session.memory.model()
        assert session.describe()["tiling"]["tile"] == "auto"
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1, tile=1024) as session:
        fixed = session.restore(image)
    assert not whole.plan.tiled and np.array_equal(whole.image, fixed.image)
    budget = model.untiled(640 * 800) * 0.8  # untiled no longer fits
    runs = []
    for _ in range(2):
        with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1, max_memory=budget) as session:
            runs.append(session.restore(image))
    assert runs[0].plan.tiled and runs[0].plan.estimate <= budget and runs[0].plan.passes == 1
    assert np.array_equal(runs[0].image, runs[1].image)  # the same bytes on every run
    assert psnr(runs[0].image, whole.image) > 40


def test_an_image_over_any_budget_fails_alone_naming_the_file(tiny_pkg, tmp_path):
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "big.png"), (synthetic_photo(700, 700) * 255).astype(np.uint8))
    cv2.imwrite(str(src / "small.png"), (synthetic_photo(64, 64) * 255).astype(np.uint8))
    out = tmp_path / "out"
    args = ["restore", str(src), str(out), "--model", str(tiny_pkg.root), "--backend", "onnxruntime"]
    budget = memory_model(tiny_pkg, _spec(tiny_pkg)).base + 8 * 2**20  # the small image fits, the large one cannot
    result = CliRunner().invoke(app, [*args, "--max-memory", str(int(budget))])
    assert result.exit_code == 1, result.output
    assert "big.png" in result.output and "--max-memory" in result.output
    assert (out / "small.png").exists() and not (out / "big.png").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--tile", "huge", "auto or a tile side"), ("--max-memory", "8X", "not a memory size"), ("--tile", "100", "8")],
)
def test_bad_tiling_options_are_one_line_before_work(tiny_pkg, tmp_path, option, value, message):
    (tmp_path / "in").mkdir()
    result = CliRunner().invoke(
        app, ["restore", str(tmp_path / "in"), str(tmp_path / "out"), "--model", str(tiny_pkg.root), option, value]
    )
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()
