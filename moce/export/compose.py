"""Whole-network graphs composed from the split graphs.

* conditional: each adapter's expert choice is a chain of ONNX ``If`` nodes whose branches are
  the expert graphs, so only the chosen expert executes (top-1, one image per call);
* dense: every expert runs and is weighted by the one-hot (top-k) gate — exact, slow, and the
  friendliest graph for Polygraphy.

Composing the already exported (and validated) split graphs, rather than tracing control flow
a second time, guarantees that all three forms compute with the very same subgraphs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from moce.model.plan import AdapterStep, SegmentStep, Step
from moce.names import EXPERT_INPUTS, EXPERT_OUTPUT, IMAGE, RESTORED, probs_name, route_name


class _Builder:
    """Accumulates nodes and initializers of one composed graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: object) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}:{outputs[0]}", **attrs))

    def inline(self, graph: onnx.GraphProto, prefix: str, interface: Mapping[str, str]) -> list[onnx.NodeProto]:
        """Copy ``graph``'s initializers here; return its nodes renamed (interface names mapped)."""

        def rename(name: str) -> str:
            return name if not name else interface.get(name, prefix + name)

        for init in graph.initializer:
            copy = onnx.TensorProto()
            copy.CopyFrom(init)
            copy.name = rename(init.name)
            self.initializers.append(copy)
        nodes = []
        for original in graph.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in original.attribute):
                raise ValueError(f"cannot inline node {original.name}: it holds a subgraph")
            node = onnx.NodeProto()
            node.CopyFrom(original)
            node.name = prefix + original.name
            node.input[:] = [rename(n) for n in original.input]
            node.output[:] = [rename(n) for n in original.output]
            nodes.append(node)
        return nodes

    def routing(self, step: AdapterStep, top_k: int) -> None:
        """Softmax of the router logits and their top-k: the gates and the chosen experts."""
        a = step.index
        self.node("Softmax", [step.logits], [probs_name(a)], axis=1)
        k = self.const(f"a{a}/k", np.array([top_k], dtype=np.int64))
        self.node("TopK", [probs_name(a), k], [f"gate{a}", route_name(a)], axis=1, largest=1, sorted=1)


def _expert_interface(step: AdapterStep, gate: str, out: str) -> dict[str, str]:
    names = dict(zip(EXPERT_INPUTS, (*step.inputs, gate)))
    names[EXPERT_OUTPUT] = out
    return names


def _io(plan: list[Step], channels: int, num_experts: int, top_k: int) -> tuple[list, list]:
    adapters = [s.index for s in plan if isinstance(s, AdapterStep)]
    inputs = [helper.make_tensor_value_info(IMAGE, TensorProto.FLOAT, ["batch", channels, "height", "width"])]
    outputs = [helper.make_tensor_value_info(RESTORED, TensorProto.FLOAT, ["batch", channels, "height", "width"])]
    outputs += [helper.make_tensor_value_info(route_name(a), TensorProto.INT64, ["batch", top_k]) for a in adapters]
    outputs += [
        helper.make_tensor_value_info(probs_name(a), TensorProto.FLOAT, ["batch", num_experts]) for a in adapters
    ]
    return inputs, outputs


def _finish(
    builder: _Builder,
    name: str,
    plan: list[Step],
    template: onnx.ModelProto,
    channels: int,
    num_experts: int,
    top_k: int,
) -> onnx.ModelProto:
    inputs, outputs = _io(plan, channels, num_experts, top_k)
    graph = helper.make_graph(builder.nodes, name, inputs, outputs, builder.initializers)
    model = helper.make_model(graph, opset_imports=list(template.opset_import), producer_name="moce")
    model.ir_version = template.ir_version
    return model


def _segments(builder: _Builder, step: SegmentStep, segments: Mapping[int, onnx.ModelProto]) -> None:
    graph = segments[step.index].graph
    identity = {v.name: v.name for v in (*graph.input, *graph.output)}
    builder.nodes += builder.inline(graph, f"s{step.index}/", identity)


def _compose(
    name: str,
    plan: list[Step],
    segments: Mapping[int, onnx.ModelProto],
    channels: int,
    num_experts: int,
    top_k: int,
    adapter: Callable[[_Builder, AdapterStep], None],
) -> onnx.ModelProto:
    """Inline the segments in plan order; ``adapter`` writes each adapter after its routing."""
    b = _Builder()
    for step in plan:
        if isinstance(step, SegmentStep):
            _segments(b, step, segments)
        else:
            b.routing(step, top_k)
            adapter(b, step)
    return _finish(b, name, plan, segments[0], channels, num_experts, top_k)


def compose_dense(
    plan: list[Step],
    segments: Mapping[int, onnx.ModelProto],
    experts: Mapping[tuple[int, int], onnx.ModelProto],
    channels: int,
    num_experts: int,
    top_k: int,
) -> onnx.ModelProto:
    """All experts run; ``adapter_out = sum_e onehot_gate[:, e] * expert_e``."""

    def dense_adapter(b: _Builder, step: AdapterStep) -> None:
        a = step.index
        b.node("Shape", [probs_name(a)], [f"a{a}/probs_shape"])
        b.node(
            "ConstantOfShape",
            [f"a{a}/probs_shape"],
            [f"a{a}/zeros"],
            value=numpy_helper.from_array(np.zeros(1, dtype=np.float32)),
        )
        b.node("ScatterElements", [f"a{a}/zeros", route_name(a), f"gate{a}"], [f"a{a}/dense_gates"], axis=1)
        outs = []
        for e in range(num_experts):
            gate, out = f"a{a}e{e}/gate", f"a{a}e{e}/out"
            b.node(
                "Slice",
                [
                    f"a{a}/dense_gates",
                    b.const(f"a{a}e{e}/start", np.array([e], np.int64)),
                    b.const(f"a{a}e{e}/end", np.array([e + 1], np.int64)),
                    b.const(f"a{a}e{e}/axis", np.array([1], np.int64)),
                ],
                [gate],
            )
            b.nodes += b.inline(experts[(a, e)].graph, f"a{a}e{e}/", _expert_interface(step, gate, out))
            outs.append(out)
        b.node("Sum", outs, [step.output])

    return _compose("moce_dense", plan, segments, channels, num_experts, top_k, dense_adapter)


def compose_conditional(
    plan: list[Step],
    segments: Mapping[int, onnx.ModelProto],
    experts: Mapping[tuple[int, int], onnx.ModelProto],
    channels: int,
    num_experts: int,
) -> onnx.ModelProto:
    """Top-1 routing with an ``If`` chain per adapter; valid for one image per call."""

    def if_adapter(b: _Builder, step: AdapterStep) -> None:
        a = step.index
        b.node("Reshape", [route_name(a), b.const(f"a{a}/scalar", np.zeros(0, np.int64))], [f"a{a}/chosen"])
        for e in range(num_experts - 1):
            b.node("Equal", [f"a{a}/chosen", b.const(f"a{a}e{e}/id", np.array(e, np.int64))], [f"a{a}e{e}/is_chosen"])
        if num_experts == 1:
            b.nodes += _branch(b, step, 0, experts[(a, 0)].graph, step.output).node
        else:
            b.nodes.append(_if_chain(b, step, 0, experts, num_experts, step.output))

    return _compose("moce_conditional", plan, segments, channels, num_experts, 1, if_adapter)


def _branch(b: _Builder, step: AdapterStep, e: int, expert_graph: onnx.GraphProto, out: str) -> onnx.GraphProto:
    """Expert ``e`` inlined as an ``If`` branch; it reads the adapter's tensors from outer scope."""
    nodes = b.inline(expert_graph, f"a{step.index}e{e}/", _expert_interface(step, f"gate{step.index}", out))
    return helper.make_graph(
        nodes, f"adapter{step.index}_expert{e}", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
    )


def _if_chain(
    b: _Builder,
    step: AdapterStep,
    e: int,
    experts: Mapping[tuple[int, int], onnx.ModelProto],
    num_experts: int,
    output: str,
) -> onnx.NodeProto:
    """``If(chosen == e, expert_e, <chain from e + 1>)``; the last expert is the final else."""
    a = step.index
    then_graph = _branch(b, step, e, experts[(a, e)].graph, f"a{a}e{e}/out")
    if e == num_experts - 2:
        else_graph = _branch(b, step, e + 1, experts[(a, e + 1)].graph, f"a{a}e{e + 1}/out")
    else:
        inner = f"a{a}/chain{e + 1}"
        node = _if_chain(b, step, e + 1, experts, num_experts, inner)
        else_graph = helper.make_graph(
            [node], f"adapter{a}_after{e}", [], [helper.make_tensor_value_info(inner, TensorProto.FLOAT, None)]
        )
    return helper.make_node(
        "If", [f"a{a}e{e}/is_chosen"], [output], name=f"If:{output}", then_branch=then_graph, else_branch=else_graph
    )
