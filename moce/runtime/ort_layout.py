"""A finishing pass over ONNX Runtime's own optimised CPU graph.

ONNX Runtime's CPU provider runs convolutions in a blocked channel layout (NCHWc) and reorders
tensors in and out of it around other operators. Our channel layer norms are exported as
``Transpose(NCHW->NHWC) -> LayerNormalization -> Transpose(NHWC->NCHW)``. ONNX Runtime folds the
first transpose into the reorder before it (``ReorderOutput`` with ``channels_last=1``) but not the
second into the reorder after it, although ``ReorderInput`` reads NHWC directly
(``channels_last=1``). This pass makes that second fold, which removes one full copy of the
activation per layer norm.

It works on the graph ONNX Runtime wrote out after optimising (``optimized_model_filepath``),
which holds kernels for this machine's block size, so the result is used in the same process and
never stored. A graph without the pattern comes back unchanged.
"""

from __future__ import annotations

from typing import Any

NCHWC_DOMAIN = "com.microsoft.nchwc"
NHWC_TO_NCHW = [0, 3, 1, 2]


def _graphs(graph: Any) -> list[Any]:
    """``graph`` and every subgraph under it (the branches of ``If`` nodes, loop bodies)."""
    found = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                found += _graphs(sub)
    return found


def _readers(graphs: list[Any]) -> dict[str, int]:
    """How many nodes and graph outputs read each value name, over all ``graphs`` (a subgraph
    may read a value of the graph around it)."""
    counts: dict[str, int] = {}
    for graph in graphs:
        for name in [i for node in graph.node for i in node.input] + [o.name for o in graph.output]:
            counts[name] = counts.get(name, 0) + 1
    return counts


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
    return sum(_fold_in(graph, readers) for graph in graphs)


def _fold_in(graph: Any, readers: dict[str, int]) -> int:
    producers = {out: node for node in graph.node for out in node.output}
    dropped: set[int] = set()
    for node in graph.node:
        if not _reads_nchw(node):
            continue
        transpose = producers.get(node.input[0])
        if transpose is None or not _is_nhwc_to_nchw(transpose) or readers.get(transpose.output[0]) != 1:
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
