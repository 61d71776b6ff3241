"""FP16 and INT8 variants of a package: accuracy and routing stability on CPU ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from msgspec.structs import replace
from onnx import TensorProto, numpy_helper

from moce.engines.build import BuildOptions, build, calibration_images
from moce.errors import InputError
from moce.metrics import psnr
from moce.names import CPU_INT8
from moce.package.manifest import Manifest, load_manifest
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


def without_cpu_placement(manifest: Manifest) -> Manifest:
    """``manifest`` as a package built before the CPU placement: the CPU then reads TensorRT's int8."""
    manifest.precisions.pop(CPU_INT8)
    return manifest


@pytest.mark.parametrize("mode", ["split", "dense"])
def test_tiny_fp16_and_int8_on_the_golden_inputs(tiny_variants, golden_io, mode):
    manifest = load_manifest(tiny_variants.manifest.root)
    psnr16, agree16 = _evaluate(manifest, "fp16", golden_io["input"], mode)
    psnr8, agree8 = _evaluate(manifest, "int8", golden_io["input"], mode)
    psnr_trt, agree_trt = _evaluate(without_cpu_placement(manifest), "int8", golden_io["input"], mode)
    assert psnr16 >= 45 and agree16 == 1.0
    assert psnr8 >= 35 and agree8 >= 0.95
    assert psnr_trt >= 35 and agree_trt >= 0.95


def _zero_point_and_weight_types(path: Path) -> tuple[set[int], int]:
    """The 8-bit element types of a graph's zero points, and the largest |int8 weight|."""
    graph = onnx.load(str(path)).graph
    zero_points = {t.data_type for t in graph.initializer if t.name.endswith("_zero_point")}
    zero_points &= {TensorProto.INT8, TensorProto.UINT8}  # not the biases' int32
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == TensorProto.INT8]
    return zero_points, max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


def test_int8_is_placed_for_tensorrt_and_for_the_cpu_and_each_runner_reads_its_own(tiny_variants):
    manifest = load_manifest(tiny_variants.manifest.root)
    assert {r.precision for r in tiny_variants.variants} == {"fp16", "int8", CPU_INT8}
    tensorrt, tensorrt_peak = _zero_point_and_weight_types(manifest.graph_file("segment1", "int8"))
    cpu, cpu_peak = _zero_point_and_weight_types(manifest.graph_file("segment1", CPU_INT8))
    assert tensorrt == {TensorProto.INT8} and tensorrt_peak > 64  # signed, symmetric, 8-bit weights
    assert TensorProto.UINT8 in cpu and cpu_peak <= 64  # unsigned activations, 7-bit weights
    assert OnnxRuntimeRunner(manifest, precision="int8").variant == CPU_INT8
    assert OnnxRuntimeRunner(manifest, ["CUDAExecutionProvider"], precision="int8").variant == "int8"
    assert OnnxRuntimeRunner(manifest, precision="fp16").variant == "fp16"
    assert OnnxRuntimeRunner(without_cpu_placement(manifest), precision="int8").variant == "int8"


def test_variants_are_recorded_and_verified(tiny_variants):
    manifest = load_manifest(tiny_variants.manifest.root)
    manifest.verify_files()
    for precision in ("fp16", "int8", CPU_INT8):
        graphs = manifest.graphs(precision)
        assert set(graphs) == {g for g in manifest.graph_entries if g != "conditional" and not g.startswith("tile_")}
    ops8 = {n.op_type for n in onnx.load(str(manifest.graph_file("segment0", "int8"))).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops8
    int8 = next(r for r in tiny_variants.variants if r.precision == "int8")
    assert int8.samples["segment0"] == len(calibration_images(None))
    assert any("calibration sample" in w for w in int8.warnings)  # random weights route narrowly


def test_a_rebuild_replaces_only_the_graphs_its_manifest_records(tiny_pkg, tmp_path):
    root = tmp_path / "pkg.moce"
    shutil.copytree(tiny_pkg.root, root)
    build(root, BuildOptions(precisions=["fp16"], onnx_only=True))
    notes = root / "fp16" / "notes.txt"
    notes.write_text("mine")
    manifest = load_manifest(root)  # an earlier build recorded a graph the plan has lost, and a
    ghost = replace(manifest.graphs("fp16")["segment0"], file="fp16/ghost.onnx")  # manifest may
    shutil.copyfile(root / "fp16" / "segment0.onnx", root / ghost.file)  # name a file elsewhere
    manifest.add_variant_graph("fp16", "ghost", ghost)
    manifest.add_variant_graph("fp16", "elsewhere", manifest.graph_entries["segment1"])
    manifest.write()
    build(root, BuildOptions(precisions=["fp16"], onnx_only=True))
    assert notes.read_text() == "mine" and (root / manifest.graph_entries["segment1"].file).is_file()
    assert not (root / ghost.file).exists() and "ghost" not in load_manifest(root).graphs("fp16")
    load_manifest(root).verify_files()


def test_a_variant_is_refused_before_work_where_a_file_moce_did_not_write_lies(tiny_pkg, tmp_path):
    root = tmp_path / "pkg.moce"
    shutil.copytree(tiny_pkg.root, root)
    theirs = root / CPU_INT8 / "segment0.onnx"
    theirs.parent.mkdir()
    theirs.write_bytes(b"not moce's")
    before = (root / "manifest.json").read_bytes()
    refused = f"{CPU_INT8}/segment0.onnx: exists and the package's manifest does not record it as its {CPU_INT8}"
    with pytest.raises(InputError, match=refused):
        build(root, BuildOptions(precisions=["int8"], onnx_only=True))
    assert theirs.read_bytes() == b"not moce's" and (root / "manifest.json").read_bytes() == before
    assert not (root / "int8").exists()
