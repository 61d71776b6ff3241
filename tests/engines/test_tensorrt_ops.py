"""Every exported graph passes the TensorRT operator-support check, and planted violations fail it
naming the graph, the node and the rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from moce.cli.main import app
from moce.engines.tensorrt_ops import check_model, check_package, support_table
from moce.package.manifest import load_manifest


def test_every_exported_graph_of_every_precision_passes(tiny_variants):
    manifest = load_manifest(tiny_variants.manifest.root)
    names = set(manifest.graph_entries)
    assert {"conditional", "dense", "segment0", "tile_segment0", "adapter0.expert0"} <= names
    assert check_package(manifest, ["fp32", "fp16", "int8"]) == []


def test_the_vendored_table_says_where_it_comes_from():
    table = support_table()
    assert "onnx-tensorrt" in table["source"] and table["tensorrt"] and table["opset"] == [9, 24]
    assert "DFT" in table["unsupported"] and "Conv" in table["supported"]


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])


@pytest.mark.parametrize(
    ("nodes", "initializers", "opset", "rule"),
    [
        ([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [], 17, "node 'uniq': Unique is unsupported"),
        ([helper.make_node("Relu", ["x"], ["y"], name="r")], [], 25, "opset 25 is outside TensorRT's 9-24"),
        (
            [helper.make_node("MyOp", ["x"], ["y"], name="custom", domain="com.example")],
            [],
            17,
            "MyOp from domain 'com.example'",
        ),
        (
            [
                helper.make_node("Shape", ["x"], ["s"], name="shape"),
                helper.make_node("Gather", ["s", "zero"], ["k"], name="g"),
                helper.make_node("Reshape", ["k", "one"], ["k1"], name="r"),
                helper.make_node("TopK", ["x", "k1"], ["y", "i"], name="topk"),
            ],
            [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([1]), "one")],
            17,
            "node 'topk': TopK: K must be a build-time constant",
        ),
        (
            [
                helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
            ],
            [
                numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                numpy_helper.from_array(np.array(3, np.int8), "z"),
            ],
            17,
            "node 'q': QuantizeLinear: the zero point must be zero",
        ),
        (
            [
                helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q"),
                helper.make_node("Relu", ["q"], ["y"], name="relu_on_int8"),
            ],
            [numpy_helper.from_array(np.array(0.1, np.float32), "s")],
            17,
            "its output may feed only DequantizeLinear nodes",
        ),
        (
            [
                helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q", axis=1),
                helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq", axis=1),
            ],
            [numpy_helper.from_array(np.full(4, 0.1, np.float32), "s")],
            17,
            "activations are quantised per tensor",
        ),
    ],
    ids=["unsupported-op", "opset", "custom-domain", "dynamic-topk", "zero-point", "q-feeds-relu", "per-channel-act"],
)
def test_a_planted_violation_names_graph_node_and_rule(nodes, initializers, opset, rule):
    problems = check_model("planted", _model(nodes, [X], [Y], initializers, opset))
    assert problems and any(rule in str(p) for p in problems), [str(p) for p in problems]
    assert all(str(p).startswith("graph 'planted', node ") for p in problems)


def test_if_branches_with_outputs_of_different_rank_fail():
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"])],
        "then",
        [],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4])],
    )
    other = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["b"], axis=0)],
        "else",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, "m", 4])],
    )
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], name="route", then_branch=then, else_branch=other)
    problems = check_model("cond", _model([node], [X, cond], [Y]))
    assert [str(p) for p in problems] == [
        "graph 'cond', node 'route': If: branch outputs 'a' and 'b' differ in rank (2 vs 3)"
    ]


def test_build_engine_runs_the_check_first_and_names_the_node(tiny_pkg, tmp_path):
    import shutil

    root = tmp_path / "p.moce"
    shutil.copytree(tiny_pkg.root, root)
    manifest = load_manifest(root)
    path = root / manifest.graph_entries["adapter1.expert2"].file
    model = onnx.load(str(path))
    model.graph.node[3].op_type = "DFT"  # TensorRT reads no DFT before 11.2
    path.write_bytes(model.SerializeToString())
    from moce.package.manifest import sha256_bytes

    manifest.graph_entries["adapter1.expert2"].sha256 = sha256_bytes(path.read_bytes())
    manifest.write()
    result = CliRunner().invoke(app, ["build-engine", str(root)])
    assert result.exit_code == 2, result.output
    assert "TensorRT's ONNX parser would refuse 1 node(s): graph 'adapter1.expert2 (fp32)', node '" in result.output
    assert "DFT is unsupported" in result.output
