"""FP16 and INT8 expressed in the ONNX graphs themselves (TensorRT 11 builds strongly typed).

* FP16: a typed rewrite of the float32 graph. Every float tensor becomes float16 except around
  the ops that must stay float32 — the routers (their pooling and ``Gemm``), layer norms, the
  attention scores (Gram matrix and norms), softmax, and the experts' spectral mixing
  (DFT products grow with the patch area and overflow float16) — which get ``Cast`` nodes at
  their edges. Graph inputs and outputs stay float32, so runtimes feed the same buffers. This is the
  same contract as ModelOpt's AutoCast (keep-list of ops in float32, casts at boundaries); we
  write it ourselves because ModelOpt's ONNX extra pins onnxruntime-gpu and cupy, which clash
  with CPU onnxruntime, and a 100-line pass is easier to audit than that dependency.
* INT8: explicit QuantizeLinear/DequantizeLinear pairs from ONNX Runtime's static quantiser,
  per-channel weights. One precision, two placements (``moce.engines.variants.INT8_PLACEMENTS``,
  each a *variant* of the package: a folder of graphs): ``int8``, symmetric activations (zero
  point 0) on every convolution, the form TensorRT consumes; and ``int8-cpu``
  (:data:`moce.names.CPU_INT8`), unsigned activations and 7-bit weights for ONNX Runtime's x86
  kernels, which ``--precision int8`` reads on the CPU. "Precision" names the number format a user
  asks for; "variant" names the folder of graphs a runner reads for it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from moce.export.patches import SIMILARITY_SCOPE, SPECTRAL_SCOPE

KEEP_FP32 = frozenset(
    {
        "LayerNormalization",
        "Softmax",
        "ReduceL2",
        "ReduceMean",
        "ReduceSum",
        "GlobalAveragePool",
        "Gemm",
        "TopK",
        "ScatterElements",
        "ConstantOfShape",
        "If",
    }
)
"""Ops that run in float32: normalisations, reductions over whole images, and everything routing."""

KEEP_FP32_SCOPES = (f"/{SPECTRAL_SCOPE}/", f"/{SIMILARITY_SCOPE}/")
"""Node-name scopes kept in float32: the experts' spectral mixing (DFT as matrix products),
whose intermediate values grow with the patch area, and the attention's Gram matrix and norms
(sums over every pixel); both overflow float16 (see :mod:`moce.export.patches`)."""

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _float_values(model: onnx.ModelProto) -> set[str]:
    """Names of every float32 tensor in the graph, from ONNX type inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    values = [*g.value_info, *g.input, *g.output]
    names = {v.name for v in values if v.type.tensor_type.elem_type == FLOAT}
    names |= {i.name for i in g.initializer if i.data_type == FLOAT}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type == FLOAT:
            names.add(node.output[0])
    return names


def _keep(node: onnx.NodeProto, keep_ops: frozenset[str]) -> bool:
    return node.op_type in keep_ops or any(scope in node.name for scope in KEEP_FP32_SCOPES)


def convert_fp16(model: onnx.ModelProto, keep_fp32: frozenset[str] = KEEP_FP32) -> onnx.ModelProto:
    """Mixed-precision copy of ``model``: float16 compute, float32 where ``keep_fp32`` says."""
    floats = _float_values(model)
    graph = model.graph
    producer_precision: dict[str, int] = {}  # float tensor -> the type it is stored in
    for value in graph.input:
        if value.name in floats:
            producer_precision[value.name] = FLOAT
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    new_inits = []
    for init in graph.initializer:
        if init.data_type != FLOAT:
            new_inits.append(init)
            continue
        users = consumers.get(init.name, [])
        if users and not any(_keep(u, keep_fp32) for u in users):
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
            new_inits.append(half)
            producer_precision[init.name] = HALF
        else:
            new_inits.append(init)
            producer_precision[init.name] = FLOAT

    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []

    def as_type(name: str, want: int) -> str:
        have = producer_precision.get(name)
        if have is None or have == want:
            return name
        key = (name, want)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if want == HALF else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [casts[key]], to=want, name=f"cast:{casts[key]}"))
        return casts[key]

    for node in graph.node:
        precision = FLOAT if _keep(node, keep_fp32) else HALF
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [as_type(n, precision) if n in floats else n for n in node.input]
        _retype_attributes(copy, precision)
        if node.op_type == "Cast" and node.input[0] not in floats:
            precision = FLOAT  # int -> float (shape arithmetic): stays exact in float32
        elif node.op_type == "Cast":
            for a in copy.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = precision
        for out in node.output:
            if out in floats:
                producer_precision[out] = precision
        nodes.append(copy)

    outputs = []
    for value in graph.output:
        if producer_precision.get(value.name) == HALF:
            internal = f"{value.name}__fp16"
            for n in nodes:
                n.output[:] = [internal if o == value.name else o for o in n.output]
                n.input[:] = [internal if i == value.name else i for i in n.input]
            producer_precision[internal] = HALF
            nodes.append(helper.make_node("Cast", [internal], [value.name], to=FLOAT, name=f"cast:{value.name}"))
        outputs.append(value)

    new_graph = helper.make_graph(nodes, graph.name, list(graph.input), outputs, new_inits)
    converted = helper.make_model(new_graph, opset_imports=list(model.opset_import), producer_name="moce-fp16")
    converted.ir_version = model.ir_version
    return converted


def _retype_attributes(node: onnx.NodeProto, precision: int) -> None:
    """Float tensors held in attributes (``Constant``, ``ConstantOfShape``) follow the node."""
    if precision != HALF:
        return
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
