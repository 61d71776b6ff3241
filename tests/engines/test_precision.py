"""FP16 and INT8 ONNX variants: accuracy and routing stability on CPU ONNX Runtime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from moce.cli.main import app
from moce.engines.build import BuildOptions, build, calibration_images
from moce.engines.precision import convert_fp16
from moce.metrics import psnr
from moce.model import MoCEIR, derive_config
from moce.package.manifest import load_manifest
from moce.package.writer import ExportOptions, export_package
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import OnnxRuntimeRunner
from tests.conftest import manifest as golden_manifest


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(np.clip(a, 0, 1), np.clip(b, 0, 1))


def _evaluate(manifest, precision: str, images: np.ndarray, mode: str = "split") -> tuple[float, float]:
    with OnnxRuntimeRunner(manifest) as r:
        ref = PlanExecutor(manifest, r).run(images, mode)
    with OnnxRuntimeRunner(manifest, precision=precision) as r:
        got = PlanExecutor(manifest, r).run(images, mode)
    routes = lambda res: np.stack([x.experts for x in res.routings])  # noqa: E731
    return _psnr(got.restored, ref.restored), float(np.mean(routes(got) == routes(ref)))


@pytest.fixture(scope="module")
def tiny_variants(tmp_path_factory, tiny_pkg):
    root = tmp_path_factory.mktemp("variants") / "tiny.moce"
    shutil.copytree(tiny_pkg.root, root)
    result = build(root, BuildOptions(precisions=["fp16", "int8"], onnx_only=True))
    return result


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


def test_fp16_keeps_norms_attention_scores_softmax_and_routers_in_float32(tiny_variants):
    manifest = load_manifest(tiny_variants.manifest.root)
    model = onnx.load(str(manifest.graph_file("segment1", "fp16")))
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.output]}
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceL2", "Gemm"):
            assert all(types.get(o, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for o in node.output), node.name
    similarity = [n for n in model.graph.node if "/similarity/" in n.name]  # Gram sums over every pixel
    assert similarity and all(types.get(o) == onnx.TensorProto.FLOAT for n in similarity for o in n.output)
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {onnx.TensorProto.FLOAT}
    assert types["router_logits1"] == onnx.TensorProto.FLOAT
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert all(inits.get(c.input[1]) == onnx.TensorProto.FLOAT16 for c in convs)


def test_convert_fp16_leaves_integer_shape_math_alone():
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
            helper.make_node("Relu", ["x"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("sf", TensorProto.FLOAT, [2]),
        ],
    )
    out = convert_fp16(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    cast = next(n for n in out.graph.node if n.op_type == "Cast" and n.input[0] == "s")
    assert cast.attribute[0].i == TensorProto.FLOAT


@pytest.mark.slow
def test_random_weight_moceir_s_fp16_and_int8(tmp_path):
    torch.manual_seed(0)
    model = MoCEIR(derive_config({k: tuple(v) for k, v in golden_manifest("S")["keys"].items()}))
    result = export_package(model, tmp_path / "s.moce", ExportOptions(conditional=False, dense=False, tiles=False))
    build(result.manifest.root, BuildOptions(precisions=["fp16", "int8"], onnx_only=True))
    manifest = load_manifest(result.manifest.root)
    images = np.stack(calibration_images(None, side=96)[:6])
    psnr16, agree16 = _evaluate(manifest, "fp16", images)
    psnr8, agree8 = _evaluate(manifest, "int8", images)
    assert psnr16 >= 45 and agree16 == 1.0
    # random weights: no trained ranges and near-tied routers; measured with onnxruntime 1.32's
    # quantiser: 33.5 dB, 86.7% of routes kept
    assert psnr8 >= 30 and agree8 >= 0.8


def test_compare_passes_and_fails_on_thresholds(tiny_variants, tmp_path):
    root = str(tiny_variants.manifest.root)
    runner = CliRunner()
    # INT8 kernels differ between CPUs (AVX2, AVX-512 VNNI): one of the 30 routing decisions has
    # been seen to flip (96.7%, 46 dB), so INT8 is held to 90% here and fp16 to every route.
    ok = runner.invoke(
        app,
        [
            "compare",
            root,
            "--runners",
            "torch,onnxruntime:fp16,onnxruntime:int8",
            "--min-route-agreement",
            "0.9",
            "--atol",
            "0.1",
            "--rtol",
            "0.1",
            "--save-results",
            str(tmp_path / "rr.json"),
            "--json",
            str(tmp_path / "c.json"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    table = json.loads((tmp_path / "c.json").read_text())
    assert [r["runner"] for r in table["rows"]] == ["onnxruntime:fp16", "onnxruntime:int8"]
    fp16, int8 = table["rows"]
    assert fp16["route_agreement"] == 1.0 and int8["route_agreement"] >= 0.9
    assert fp16["min_psnr"] > 45 and int8["min_psnr"] > 35
    assert (tmp_path / "rr.json").stat().st_size > 0  # Polygraphy RunResults
    strict_psnr = runner.invoke(app, ["compare", root, "--runners", "onnxruntime,onnxruntime:int8", "--min-psnr", "80"])
    assert strict_psnr.exit_code == 1 and "PSNR" in strict_psnr.output
    strict_tol = runner.invoke(
        app,
        [
            "compare",
            root,
            "--runners",
            "onnxruntime,onnxruntime:int8",
            "--atol",
            "1e-6",
            "--rtol",
            "1e-6",
            "--error-stat",
            "max",
        ],
    )
    assert strict_tol.exit_code == 1 and "beyond atol" in strict_tol.output


def test_readme_polygraphy_commands_work_on_the_dense_graph(tiny_variants, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    polygraphy = str(Path(sys.executable).with_name("polygraphy"))
    root = tiny_variants.manifest.root
    common = ["--onnxrt", "--input-shapes", "image:[1,3,64,64]", "--val-range", "image:[0,1]"]
    first = subprocess.run(
        [polygraphy, "run", str(root / "dense.onnx"), *common, "--save-outputs", str(tmp_path / "fp32.json")],
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    second = subprocess.run(
        [
            polygraphy,
            "run",
            str(root / "fp16" / "dense.onnx"),
            *common,
            "--load-outputs",
            str(tmp_path / "fp32.json"),
            "--atol",
            "1e-2",
            "--rtol",
            "1e-2",
        ],
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0 and "PASSED" in second.stdout + second.stderr
