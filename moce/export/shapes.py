"""Symbolic shapes that let ONNX Runtime keep its blocked layout (NCHWc) across element-wise ops.

ONNX Runtime runs convolutions in a blocked channel layout and can run an element-wise
``Mul``/``Add`` of two convolution outputs in that layout too, and fold a residual ``Add`` into
the convolution, but only when it can prove both inputs have the same shape. With dynamic
height and width it compares the graph's symbolic dims, and the exported graphs give every
convolution output fresh ``unk__N`` dims. So the FFN's ``gelu(a) * b`` (two convolution
chains from one layer norm) went back to NCHW and forward again around every product, and
residual sums stayed separate passes (MoCE-IR-S, 256 px: 182 -> 134 reorders out of the
blocked layout in segment 0; split plan ~3% faster; docs/performance.md).

:func:`propagate_symbolic_dims` rewrites the ``value_info`` of outputs whose shape follows
exactly from their inputs' (same-padding stride-1 convolutions, element-wise ops, transposes),
so equal shapes carry equal dim names. It asserts nothing an op does not guarantee; outputs of
any other op keep the exporter's shapes.
"""

from __future__ import annotations

import onnx
from onnx import helper

Dim = int | str
Shape = list[Dim]

_SAME_SHAPE_OPS = frozenset(
    {
        "Abs",
        "Cast",
        "Clip",
        "Erf",
        "Exp",
        "Gelu",
        "Identity",
        "LayerNormalization",
        "Log",
        "Neg",
        "Reciprocal",
        "Relu",
        "Sigmoid",
        "Softmax",
        "Sqrt",
        "Tanh",
    }
)
_BROADCAST_OPS = frozenset({"Add", "Div", "Mul", "Pow", "Sub"})


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == name:
            return list(attribute.ints)
    return default


def _known(type_proto: onnx.TypeProto) -> Shape | None:
    """The tensor's dims when every one has a value or a name, else None."""
    if not type_proto.tensor_type.HasField("shape"):
        return None
    dims: Shape = []
    for dim in type_proto.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.dim_param:
            dims.append(dim.dim_param)
        else:
            return None
    return dims


def _broadcast(shapes: list[Shape]) -> Shape | None:
    """Numpy broadcasting of known shapes; None when two dims may differ (different names)."""
    rank = max(len(s) for s in shapes)
    out: Shape = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return out


def _same_padding_conv(node: onnx.NodeProto, data: Shape, weight: Shape) -> Shape | None:
    """A convolution's output shape when it keeps the input's height and width exactly."""
    if not all(isinstance(k, int) for k in weight[2:]):
        return None
    kernel = _ints(node, "kernel_shape", [int(k) for k in weight[2:]])
    pads = _ints(node, "pads", [0] * 2 * len(kernel))
    strides = _ints(node, "strides", [1] * len(kernel))
    dilations = _ints(node, "dilations", [1] * len(kernel))
    rank = len(kernel)
    if any(strides[i] != 1 or dilations[i] != 1 or pads[i] + pads[i + rank] + 1 != kernel[i] for i in range(rank)):
        return None
    return [data[0], weight[0], *data[2:]]


def _output_shape(node: onnx.NodeProto, inputs: list[Shape | None]) -> Shape | None:
    if node.op_type == "Conv" and len(inputs) > 1 and inputs[0] is not None and inputs[1] is not None:
        return _same_padding_conv(node, inputs[0], inputs[1])
    if node.op_type in _SAME_SHAPE_OPS and inputs and inputs[0] is not None:
        return list(inputs[0])
    if node.op_type in _BROADCAST_OPS and inputs and all(s is not None for s in inputs):
        return _broadcast(inputs)  # type: ignore[arg-type]
    if node.op_type == "Transpose" and inputs[0] is not None:
        return [inputs[0][axis] for axis in _ints(node, "perm", list(reversed(range(len(inputs[0])))))]
    return None


def propagate_symbolic_dims(model: onnx.ModelProto) -> int:
    """Give outputs whose shape follows from their inputs the inputs' dim names; returns how many.

    Nodes are visited in graph order (ONNX graphs are topologically sorted), so names flow
    from the graph inputs through every chain of such ops.
    """
    graph = model.graph
    shapes: dict[str, Shape | None] = {t.name: list(t.dims) for t in graph.initializer}
    shapes |= {v.name: _known(v.type) for v in (*graph.value_info, *graph.input)}
    elem_types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    derived: dict[str, Shape] = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = list(node.attribute[0].t.dims)
            continue
        shape = _output_shape(node, [shapes.get(name) for name in node.input])
        if shape is not None and node.output[0] in elem_types:
            shapes[node.output[0]] = derived[node.output[0]] = shape
    kept = [v for v in graph.value_info if v.name not in derived]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    graph.value_info.extend(
        helper.make_tensor_value_info(name, elem_types[name], shape) for name, shape in derived.items()
    )
    return len(derived)
