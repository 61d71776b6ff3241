"""Two passes around ONNX Runtime's own CPU optimiser, for its blocked channel layout.

ONNX Runtime's CPU provider runs convolutions in a blocked channel layout (NCHWc) and reorders
tensors in and out of it around other operators; element-wise sums stay in it only when every
operand is already there.

* Before it optimises, :func:`enter_blocked_layout`: a split-plan segment starts from graph
  inputs (the previous expert's output, the skip tensors) in plain NCHW. A residual stream that
  starts from one never enters the blocked layout, so every block of it pays a reorder out of
  the layout, a plain sum and a transpose before its layer norm. An identity depthwise
  convolution on such an input takes the stream into the layout once.
* After it optimises, :func:`fold_reorder_transposes`: our channel layer norms are exported as
  ``Transpose(NCHW->NHWC) -> LayerNormalization -> Transpose(NHWC->NCHW)``. ONNX Runtime folds
  the first transpose into the reorder before it (``ReorderOutput`` with ``channels_last=1``) but
  not the second into the reorder after it, although ``ReorderInput`` reads NHWC directly
  (``channels_last=1``). This pass makes that fold, removing one copy per layer norm.

The second pass works on the graph ONNX Runtime wrote out after optimising
(``optimized_model_filepath``), which holds kernels for this machine's block size, so the result
is used in the same process and never stored. A graph without either pattern comes back unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moce._lazy import require

NCHWC_DOMAIN = "com.microsoft.nchwc"
NHWC_TO_NCHW = [0, 3, 1, 2]
BLOCK_MULTIPLE = 16
"""ONNX Runtime takes a convolution into its blocked layout when its output channels are a
multiple of 16 (either block size, 8 with AVX2 and 16 with AVX-512, divides it)."""


def enter_blocked_layout(model: Any) -> int:
    """Give each 4-D float graph input that an ``Add`` reads, and whose channel count is a
    multiple of :data:`BLOCK_MULTIPLE`, an identity depthwise 1x1 convolution (weight 1, no bias:
    exact) in front of those sums. ``model`` is an ``onnx.ModelProto``, changed in place; returns
    how many inputs were given one."""
    onnx = require("onnx", "onnx")
    graph = model.graph
    readers = _readers([graph])
    entries = []
    for value in graph.input:
        channels = _blocked_channels(value)
        sums = [node for node in readers.get(value.name, []) if node.op_type == "Add" and node.domain == ""]
        if channels is None or not sums:
            continue
        entered, weight = f"{value.name}/blocked", f"{value.name}/blocked/weight"
        ones = np.ones((channels, 1, 1, 1), np.float32)
        graph.initializer.append(onnx.numpy_helper.from_array(ones, weight))
        conv = onnx.helper.make_node("Conv", [value.name, weight], [entered], group=channels, kernel_shape=[1, 1])
        entries.append(conv)
        graph.value_info.append(onnx.helper.make_value_info(entered, value.type))
        for node in sums:
            node.input[:] = [entered if name == value.name else name for name in node.input]
    if entries:
        nodes = [*entries, *graph.node]
        del graph.node[:]
        graph.node.extend(nodes)
    return len(entries)


def _blocked_channels(value: Any) -> int | None:
    """The channel count of a 4-D float32 value that the blocked layout takes, or None."""
    tensor = value.type.tensor_type
    dims = tensor.shape.dim
    if tensor.elem_type != 1 or len(dims) != 4 or not dims[1].HasField("dim_value"):  # 1: FLOAT
        return None
    channels = dims[1].dim_value
    return channels if channels > 0 and channels % BLOCK_MULTIPLE == 0 else None


def _graphs(graph: Any) -> list[Any]:
    """``graph`` and every subgraph under it (the branches of ``If`` nodes, loop bodies)."""
    found = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                found += _graphs(sub)
    return found


def _readers(graphs: list[Any]) -> dict[str, list[Any]]:
    """The nodes that read each value name, over all ``graphs`` (a subgraph may read a value of
    the graph around it)."""
    found: dict[str, list[Any]] = {}
    for graph in graphs:
        for node in graph.node:
            for name in node.input:
                found.setdefault(name, []).append(node)
    return found


def _attribute(node: Any, name: str) -> Any | None:
    return next((a for a in node.attribute if a.name == name), None)


def _is_nhwc_to_nchw(node: Any) -> bool:
    perm = _attribute(node, "perm")
    return node.op_type == "Transpose" and node.domain == "" and perm is not None and list(perm.ints) == NHWC_TO_NCHW


def _reads_nchw(node: Any) -> bool:
    last = _attribute(node, "channels_last")
    return node.op_type == "ReorderInput" and node.domain == NCHWC_DOMAIN and (last is None or last.i == 0)


def fold_reorder_transposes(model: Any) -> int:
    """Fold each ``Transpose(perm=[0,3,1,2]) -> ReorderInput`` into ``ReorderInput(channels_last=1)``.

    ``model`` is an ``onnx.ModelProto`` from ONNX Runtime's optimiser, changed in place. Only a
    transpose read by nothing but the reorder (in the same graph) is removed. Returns the number
    of folds.
    """
    graphs = _graphs(model.graph)
    readers = _readers(graphs)
    outputs = {value.name for graph in graphs for value in graph.output}
    return sum(_fold_in(graph, readers, outputs) for graph in graphs)


def _fold_in(graph: Any, readers: dict[str, list[Any]], outputs: set[str]) -> int:
    producers = {out: node for node in graph.node for out in node.output}
    dropped: set[int] = set()
    for node in graph.node:
        if not _reads_nchw(node):
            continue
        transpose = producers.get(node.input[0])
        if transpose is None or not _is_nhwc_to_nchw(transpose):
            continue
        if len(readers[transpose.output[0]]) != 1 or transpose.output[0] in outputs:  # the reorder alone
            continue
        node.input[0] = transpose.input[0]
        last = _attribute(node, "channels_last")
        if last is None:
            last = node.attribute.add()
            last.name = "channels_last"
            last.type = 2  # AttributeProto.INT
        last.i = 1
        dropped.add(id(transpose))
    if dropped:
        kept = [node for node in graph.node if id(node) not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
    return len(dropped)
