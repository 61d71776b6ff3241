"""The FP16 rewrite of ONNX graphs: what stays in float32, and shape arithmetic left alone."""

from __future__ import annotations

import onnx

from moce.engines.precision import convert_fp16
from moce.package.manifest import load_manifest


def test_fp16_keeps_norms_attention_scores_softmax_and_routers_in_float32(tiny_variants):
    manifest = load_manifest(tiny_variants.manifest.root)
    model = onnx.load(str(manifest.graph_file("segment1", "fp16")))
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.output]}
    kept = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax", "ReduceL2", "Gemm")]
    assert {n.op_type for n in kept} >= {"Softmax", "LayerNormalization"}, {n.op_type for n in kept}
    for node in kept:  # each output typed by inference (an untyped one proves nothing) and float32
        assert all(o in types and types[o] == onnx.TensorProto.FLOAT for o in node.output), node.name
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
