"""FP16 and INT8 variants of a package: accuracy and routing stability on CPU ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from moce.engines.build import calibration_images
from moce.metrics import psnr
from moce.package.manifest import load_manifest
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import OnnxRuntimeRunner


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(np.clip(a, 0, 1), np.clip(b, 0, 1))


def _evaluate(manifest, precision: str, images: np.ndarray, mode: str = "split") -> tuple[float, float]:
    with OnnxRuntimeRunner(manifest) as r:
        ref = PlanExecutor(manifest, r).run(images, mode)
    with OnnxRuntimeRunner(manifest, precision=precision) as r:
        got = PlanExecutor(manifest, r).run(images, mode)
    routes = lambda res: np.stack([x.experts for x in res.routings])  # noqa: E731
    return _psnr(got.restored, ref.restored), float(np.mean(routes(got) == routes(ref)))


@pytest.mark.parametrize("mode", ["split", "dense"])
def test_tiny_fp16_and_int8_on_the_golden_inputs(tiny_variants, golden_io, mode):
    manifest = load_manifest(tiny_variants.manifest.root)
    psnr16, agree16 = _evaluate(manifest, "fp16", golden_io["input"], mode)
    psnr8, agree8 = _evaluate(manifest, "int8", golden_io["input"], mode)
    assert psnr16 >= 45 and agree16 == 1.0
    assert psnr8 >= 35 and agree8 >= 0.95


def test_variants_are_recorded_and_verified(tiny_variants):
    manifest = load_manifest(tiny_variants.manifest.root)
    manifest.verify_files()
    for precision in ("fp16", "int8"):
        graphs = manifest.graphs(precision)
        assert set(graphs) == {g for g in manifest.graph_entries if g != "conditional" and not g.startswith("tile_")}
    ops8 = {n.op_type for n in onnx.load(str(manifest.graph_file("segment0", "int8"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops8
    int8 = next(r for r in tiny_variants.variants if r.precision == "int8")
    assert int8.samples["segment0"] == len(calibration_images(None))
    assert any("calibration sample" in w for w in int8.warnings)  # random weights route narrowly
