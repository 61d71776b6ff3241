"""The passes around ONNX Runtime's CPU optimiser: residual streams that start from graph inputs
enter the blocked layout, the transposes after our channel layer norms fold into its reorders,
and nothing else changes."""

from __future__ import annotations

import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from moce.runtime.executor import PlanExecutor
from moce.runtime.ort_layout import NCHWC_DOMAIN, enter_blocked_layout, fold_reorder_transposes
from moce.runtime.runners import OnnxRuntimeRunner

CHANNELS = 32  # a multiple of both block sizes (8 with AVX2, 16 with AVX-512)


def _norm_block(extra_reader: bool = False) -> onnx.ModelProto:
    """Conv -> channel layer norm (as exported: transpose, LayerNormalization, transpose) -> two Convs."""
    rng = np.random.default_rng(0)
    c = CHANNELS
    weights = [
        numpy_helper.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32) / c, "w0"),
        numpy_helper.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32) / c, "w1"),
        numpy_helper.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32) / c, "w2"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"]),
        helper.make_node("Transpose", ["a"], ["a_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["a_nhwc", "gamma", "beta"], ["n_nhwc"], axis=-1),
        helper.make_node("Transpose", ["n_nhwc"], ["n"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["n", "w1"], ["y1"]),
        helper.make_node("Conv", ["n", "w2"], ["y2"]),  # the norms feed two or three projections
        helper.make_node("Add", ["y1", "y2"], ["y"]),
    ]
    shape = ["batch", c, "height", "width"]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes, "norm_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)], outputs, weights
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _optimised(model: onnx.ModelProto, tmp_path) -> onnx.ModelProto:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def _run(model: onnx.ModelProto, optimise: bool, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimise else level.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


needs_nchwc = pytest.mark.skipif(
    platform.machine().lower() not in {"x86_64", "amd64"}, reason="ONNX Runtime's blocked layout is x86-64 only"
)


@needs_nchwc
def test_the_transpose_after_a_layer_norm_folds_into_the_reorder(tmp_path):
    model = _optimised(_norm_block(), tmp_path)
    assert "ReorderInput" in _ops(model) and _ops(model).count("Transpose") == 1

    assert fold_reorder_transposes(model) == 1

    assert "Transpose" not in _ops(model)
    norm = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    reorder = next(n for n in model.graph.node if n.op_type == "ReorderInput" and n.input[0] == norm.output[0])
    assert helper.get_attribute_value(next(a for a in reorder.attribute if a.name == "channels_last")) == 1
    x = np.random.default_rng(1).standard_normal((2, CHANNELS, 24, 40)).astype(np.float32)
    want = _run(_norm_block(), True, x)
    got = _run(model, False, x)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)


@needs_nchwc
def test_a_transpose_someone_else_reads_stays(tmp_path):
    model = _optimised(_norm_block(extra_reader=True), tmp_path)
    before = model.SerializeToString()
    assert fold_reorder_transposes(model) == 0
    assert model.SerializeToString() == before


def test_a_graph_without_the_pattern_comes_back_unchanged():
    model = _norm_block()  # not optimised: no reorders at all
    before = model.SerializeToString()
    assert fold_reorder_transposes(model) == 0
    assert model.SerializeToString() == before


def test_branches_of_if_nodes_are_folded_too():
    c = CHANNELS
    inner = [
        helper.make_node("Transpose", ["v"], ["v_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("ReorderInput", ["v_nchw"], ["r"], domain=NCHWC_DOMAIN, channels_last=0),
    ]
    out = [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)]
    branch = helper.make_graph(inner, "then", [], out)
    other = helper.make_graph([helper.make_node("Identity", ["v"], ["r2"])], "else", [], [out[0]])
    outer = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)],
        "outer",
        [
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 4, 4, c]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(outer)

    assert fold_reorder_transposes(model) == 1

    then = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["ReorderInput"] and list(then.node[0].input) == ["v"]


def test_the_runner_restores_the_same_with_and_without_the_passes(tiny_pkg):
    image = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(tiny_pkg, threads=1, layout_passes=False) as plain:
        want = PlanExecutor(tiny_pkg, plain).run(image, "split")
    with OnnxRuntimeRunner(tiny_pkg, threads=1) as folded:
        got = PlanExecutor(tiny_pkg, folded).run(image, "split")
    np.testing.assert_allclose(got.restored, want.restored, atol=1e-6)
    assert [r.experts.tolist() for r in got.routings] == [r.experts.tolist() for r in want.routings]


def _residual_stream(channels: int = CHANNELS, reader: str = "Add") -> onnx.ModelProto:
    """A segment whose residual stream starts from a graph input: ``y = x + Conv(x)`` twice."""
    c = channels
    rng = np.random.default_rng(2)
    weights = [
        numpy_helper.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32) / c, f"w{i}") for i in (0, 1)
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"]),
        helper.make_node(reader, ["x", "a"], ["s"]),
        helper.make_node("Conv", ["s", "w1"], ["b"]),
        helper.make_node("Add", ["s", "b"], ["y"]),
    ]
    shape = ["batch", c, "height", "width"]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@needs_nchwc
def test_a_residual_stream_from_a_graph_input_enters_the_blocked_layout(tmp_path):
    plain = _optimised(_residual_stream(), tmp_path)
    sums_in_nchw = [n for n in plain.graph.node if n.op_type == "Add" and n.domain == ""]
    assert sums_in_nchw  # ONNX Runtime alone leaves the stream out of its layout

    model = _residual_stream()
    assert enter_blocked_layout(model) == 1
    entered = _optimised(model, tmp_path)

    producers = {out: node for node in entered.graph.node for out in node.output}
    assert "ReorderOutput" not in [
        producers[i].op_type for n in entered.graph.node if n.op_type == "Add" for i in n.input if i in producers
    ]
    x = np.random.default_rng(3).standard_normal((2, CHANNELS, 20, 36)).astype(np.float32)
    np.testing.assert_allclose(_run(entered, False, x)[0], _run(_residual_stream(), True, x)[0], atol=1e-5)


@pytest.mark.parametrize(("channels", "reader"), [(CHANNELS, "Mul"), (24, "Add")])
def test_inputs_the_layout_would_not_take_stay_as_they_are(channels, reader):
    model = _residual_stream(channels, reader)  # 24 channels: not a multiple of 16; Mul: no sum reads it
    before = model.SerializeToString()
    assert enter_blocked_layout(model) == 0
    assert model.SerializeToString() == before
