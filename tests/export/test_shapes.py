"""Symbolic dims: equal shapes get equal names, and nothing an op does not guarantee is claimed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from moce.export.shapes import propagate_symbolic_dims


def _value(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _ffn_like_graph() -> onnx.ModelProto:
    """x -> two conv chains (1x1, then depth-wise 3x3 pad 1) -> an activation on one -> Mul; a stride-2 conv
    aside. value_info as an exporter leaves it: a fresh unknown name for every conv output."""
    rng = np.random.default_rng(0)
    weights = {
        "w_a": rng.standard_normal((32, 32, 1, 1)),
        "w_b": rng.standard_normal((32, 32, 1, 1)),
        "w_a3": rng.standard_normal((32, 1, 3, 3)),
        "w_b3": rng.standard_normal((32, 1, 3, 3)),
        "w_down": rng.standard_normal((32, 32, 3, 3)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w_a"], ["a"]),
        helper.make_node("Conv", ["x", "w_b"], ["b"]),
        helper.make_node("Conv", ["a", "w_a3"], ["a3"], pads=[1, 1, 1, 1], group=32),
        helper.make_node("Conv", ["b", "w_b3"], ["b3"], pads=[1, 1, 1, 1], group=32),
        helper.make_node("Sigmoid", ["a3"], ["act"]),
        helper.make_node("Mul", ["act", "b3"], ["y"]),
        helper.make_node("Conv", ["x", "w_down"], ["down"], pads=[1, 1, 1, 1], strides=[2, 2]),
    ]
    unknown = iter(f"unk__{i}" for i in range(100))
    value_info = [
        _value(n, ["batch", c, next(unknown), next(unknown)])
        for n, c in (("a", 32), ("b", 32), ("a3", 32), ("b3", 32), ("act", 32), ("down", 32))
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [_value("x", ["batch", 32, "height", "width"])],
        [_value("y", ["batch", 32, "height", "width"]), _value("down", ["batch", 32, None, None])],
        [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()],
        value_info=value_info,
    )
    # IR 8, what opset 17 needs: onnx 1.23 writes IR 14 by default, which ONNX Runtime 1.30 refuses (max 13)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _dims(model: onnx.ModelProto) -> dict[str, list]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}


def test_same_padding_chains_and_elementwise_ops_get_the_input_names():
    model = _ffn_like_graph()
    assert propagate_symbolic_dims(model) == 5
    dims = _dims(model)
    for name in ("a", "b", "a3", "b3", "act"):
        assert dims[name] == ["batch", 32, "height", "width"], name


def test_a_strided_convolution_keeps_the_exporters_shape():
    model = _ffn_like_graph()
    propagate_symbolic_dims(model)
    assert _dims(model)["down"][2:] == ["unk__10", "unk__11"]


def test_onnx_runtime_then_keeps_the_product_in_its_blocked_layout(tmp_path):
    """The point of the names: without them the product is reordered out of and back into NCHWc."""

    def reorders(model: onnx.ModelProto) -> int:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return sum(n.op_type == "ReorderOutput" for n in onnx.load(options.optimized_model_filepath).graph.node)

    before = reorders(_ffn_like_graph())
    named = _ffn_like_graph()
    propagate_symbolic_dims(named)
    assert reorders(named) < before
