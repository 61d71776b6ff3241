"""Can TensorRT's ONNX parser take a graph? Checked on the graph alone, before any engine is built.

The operators TensorRT supports come from the onnx-tensorrt operator support matrix, vendored as
data (``data/tensorrt_onnx_ops.json``, with its source and version). The restrictions of that matrix
that moce's graphs can meet are rules here, plus the explicit-quantisation rules TensorRT applies to
Q/DQ graphs: every ``QuantizeLinear`` feeds only ``DequantizeLinear`` nodes, zero points are zero,
activations are quantised per tensor, and per-channel weight scales run along axis 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from moce.package.manifest import Manifest

TABLE = Path(__file__).parent / "data" / "tensorrt_onnx_ops.json"
TOPK_MAX = 3840
"""TensorRT's largest ``K`` for ``TopK``."""


@dataclass(frozen=True)
class Problem:
    graph: str
    node: str
    rule: str

    def __str__(self) -> str:
        return f"graph '{self.graph}', node '{self.node}': {self.rule}"


@cache
def support_table() -> dict[str, Any]:
    return json.loads(TABLE.read_text())


class _Graph:
    """One graph (or If branch) with what the rules ask of it: constants and each tensor's consumers."""

    def __init__(self, graph: onnx.GraphProto, outer: dict[str, np.ndarray] | None = None) -> None:
        self.graph = graph
        self.constants = dict(outer or {})
        self.constants.update({t.name: numpy_helper.to_array(t) for t in graph.initializer})
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def constant(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The value of input ``index`` when it is known at build time, else None."""
        return self.constants.get(node.input[index]) if index < len(node.input) and node.input[index] else None


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _node_rules(g: _Graph, node: onnx.NodeProto) -> Iterator[str]:
    """The restrictions of the support matrix (and of explicit quantisation) that ``node`` breaks."""
    op = node.op_type
    if op == "TopK":
        k = g.constant(node, 1)
        if k is None:
            yield "TopK: K must be a build-time constant"
        elif int(np.max(k)) >= TOPK_MAX:
            yield f"TopK: K must be less than {TOPK_MAX}"
        if _attribute(node, "sorted", 1) != 1:
            yield "TopK: sorted must be 1"
    elif op.startswith("Reduce") or op in ("Squeeze", "Unsqueeze"):
        if len(node.input) > 1 and node.input[1] and g.constant(node, 1) is None:
            yield f"{op}: axes must be a build-time constant"
    elif op == "LayerNormalization" and any(name for name in node.output[1:]):
        yield "LayerNormalization: only the first output is supported"
    elif op in ("QuantizeLinear", "DequantizeLinear"):
        yield from _qdq_rules(g, node)


def _qdq_rules(g: _Graph, node: onnx.NodeProto) -> Iterator[str]:
    op = node.op_type
    scale, zero = g.constant(node, 1), g.constant(node, 2)
    if scale is None:
        yield f"{op}: the scale must be a build-time constant"
    elif np.any(scale <= 0):
        yield f"{op}: scales must be positive"
    if len(node.input) > 2 and node.input[2] and (zero is None or np.any(zero != 0)):
        yield f"{op}: the zero point must be zero"
    per_channel = scale is not None and scale.size > 1
    if op == "QuantizeLinear":
        if any(c.op_type != "DequantizeLinear" for c in g.consumers.get(node.output[0], [])):
            yield "QuantizeLinear: its output may feed only DequantizeLinear nodes"
        if per_channel and g.constant(node, 0) is None:
            yield "QuantizeLinear: activations are quantised per tensor (one scale)"
    if per_channel and _attribute(node, "axis", 1) != 0:
        yield f"{op}: per-channel scales must run along axis 0 (output channels of the weights)"


def _rank(value: onnx.ValueInfoProto) -> int | None:
    kind = value.type.tensor_type
    return len(kind.shape.dim) if kind.HasField("shape") else None


def _if_rules(node: onnx.NodeProto) -> Iterator[str]:
    """Both branches' outputs must have the same ranks (and names that differ between the branches)."""
    branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    then, other = branches.get("then_branch"), branches.get("else_branch")
    if then is None or other is None:
        return
    for a, b in zip(then.output, other.output):
        if _rank(a) != _rank(b):
            yield f"If: branch outputs '{a.name}' and '{b.name}' differ in rank ({_rank(a)} vs {_rank(b)})"
        if a.name == b.name:
            yield f"If: both branches name an output '{a.name}'; they must differ"


def _check_graph(name: str, g: _Graph) -> Iterator[Problem]:
    table = support_table()
    supported, unsupported = set(table["supported"]), set(table["unsupported"])
    for index, node in enumerate(g.graph.node):
        label = node.name or f"#{index} {node.op_type}"
        if node.domain not in ("", "ai.onnx"):
            yield Problem(name, label, f"{node.op_type} from domain '{node.domain}' (custom ops need plugins)")
            continue
        if node.op_type not in supported:
            why = "unsupported" if node.op_type in unsupported else "not in TensorRT's operator table"
            yield Problem(name, label, f"{node.op_type} is {why} (TensorRT {table['tensorrt']})")
            continue
        for rule in _node_rules(g, node):
            yield Problem(name, label, rule)
        if node.op_type == "If":
            yield from (Problem(name, label, rule) for rule in _if_rules(node))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _check_graph(name, _Graph(attr.g, g.constants))


def check_model(name: str, model: onnx.ModelProto) -> list[Problem]:
    """Every reason TensorRT's ONNX parser would refuse ``model`` (an empty list: none found)."""
    table = support_table()
    low, high = table["opset"]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    problems = []
    if not low <= opset <= high:
        problems.append(Problem(name, "(graph)", f"opset {opset} is outside TensorRT's {low}-{high}"))
    return problems + list(_check_graph(name, _Graph(model.graph)))


def check_package(manifest: Manifest, precisions: list[str], graphs: list[str] | None = None) -> list[Problem]:
    """:func:`check_model` over the package's graphs of ``precisions`` (all of them, or ``graphs``)."""
    problems = []
    for precision in precisions:
        entries = manifest.graphs(precision)
        for name in graphs if graphs is not None else list(entries):
            model = onnx.load(str(manifest.graph_file(name, precision)), load_external_data=False)
            problems += check_model(f"{name} ({precision})", model)
    return problems
