"""Export of the split graphs: one ONNX graph per trunk segment and per expert.

Every graph has dynamic batch, height and width axes; tensor names are the plan's, so the
manifest can wire graphs together by name alone.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from moce.export.patches import export_form
from moce.export.shapes import propagate_symbolic_dims
from moce.files import write_bytes_atomic
from moce.model.global_stats import TileSegments
from moce.model.network import ComplexityExpert, MoCEIR
from moce.model.plan import SegmentStep, tensor_levels
from moce.names import (
    BATCH_DIM,
    CORE_MASK,
    EXPERT_INPUTS,
    EXPERT_OUTPUT,
    FREQ_EMB,
    IMAGE,
    IMAGE_STATS,
    RESTORED,
    TILE_INPUTS,
    TILE_STATS,
    USE_IMAGE_STATS,
    AdapterTensors,
    image_axes,
)

DEFAULT_OPSET = 17
"""17 brings ``LayerNormalization``; TensorRT 8.6+ and every ONNX Runtime we support read it."""


class SegmentGraph(nn.Module):
    """Adapts :meth:`MoCEIR.run_segment` to positional tensors for tracing."""

    def __init__(self, model: MoCEIR, step: SegmentStep) -> None:
        super().__init__()
        self.model = model
        self.step = step

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        made = self.model.run_segment(self.step.index, dict(zip(self.step.inputs, tensors)))
        return tuple(made[name] for name in self.step.outputs)


class TileSegmentGraph(nn.Module):
    """A segment that also takes image-wide sums and reports its tile's share of them."""

    def __init__(self, tiles: TileSegments, step: SegmentStep) -> None:
        super().__init__()
        self.model = tiles.model  # the module tree (and weight names) traced, as in SegmentGraph
        self.tiles = tiles
        self.step = step

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        made = self.tiles.run(self.step.index, dict(zip((*self.step.inputs, *TILE_INPUTS), tensors)))
        return tuple(made[name] for name in (*self.step.outputs, TILE_STATS))


class ExpertGraph(nn.Module):
    """One expert with its gate applied: ``gate[b] * expert(adapter_in, shared)``."""

    def __init__(self, expert: ComplexityExpert) -> None:
        super().__init__()
        self.expert = expert

    def forward(self, adapter_in: Tensor, shared: Tensor, gate: Tensor) -> Tensor:
        return self.expert(adapter_in, shared) * gate.reshape(-1, 1, 1, 1)


def dynamic_axes_for(model: MoCEIR, names: list[str]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    levels = tensor_levels(model.config)
    for name in names:
        level = levels[name]
        axes[name] = {0: BATCH_DIM} if level is None else image_axes(level)
    return axes


def sample_tensor(model: MoCEIR, name: str, batch: int, height: int, width: int) -> Tensor:
    """A random tensor shaped like plan tensor ``name`` for an image of ``height`` x ``width``."""
    c = model.config
    if name in (IMAGE, RESTORED):
        return torch.rand(batch, c.in_channels, height, width)
    if name == FREQ_EMB:
        return torch.randn(batch, c.freq_dim)
    level = tensor_levels(c)[name]
    assert level is not None
    return torch.randn(batch, c.level_dim(level), height // 2**level, width // 2**level)


def _to_onnx(
    module: nn.Module,
    args: tuple[Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
    opset: int,
) -> onnx.ModelProto:
    """Trace with the TorchScript exporter, then fold constants and shape arithmetic (onnxslim)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return simplify(onnx.load_from_string(buffer.getvalue()))


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, dead-node and Identity removal (onnxslim); keeps names and dynamic axes.
    Then equal shapes get equal dim names, for ONNX Runtime's blocked layout (see
    :mod:`moce.export.shapes`)."""
    import onnxslim

    model = onnxslim.slim(model)
    propagate_symbolic_dims(model)
    return model


def export_segment(
    model: MoCEIR, step: SegmentStep, opset: int = DEFAULT_OPSET, trace_size: tuple[int, int] = (64, 96)
) -> onnx.ModelProto:
    """Trunk segment ``step`` as an ONNX graph whose tensor names are the plan's."""
    args = tuple(sample_tensor(model, n, 2, *trace_size) for n in step.inputs)
    names = [*step.inputs, *step.outputs]
    graph = SegmentGraph(export_form(model), step)
    return _to_onnx(graph, args, list(step.inputs), list(step.outputs), dynamic_axes_for(model, names), opset)


def export_tile_segment(
    model: MoCEIR, step: SegmentStep, opset: int = DEFAULT_OPSET, trace_size: tuple[int, int] = (64, 96)
) -> tuple[onnx.ModelProto, int]:
    """Segment ``step`` for tiles (see :mod:`moce.model.global_stats`) and its stats size."""
    env = {n: sample_tensor(model, n, 2, *trace_size) for n in step.inputs}
    env[CORE_MASK] = torch.ones(2, 1, *trace_size)
    tiles = TileSegments(export_form(model))
    size = tiles.stats_size(step.index, env)
    env[USE_IMAGE_STATS] = torch.ones(1)
    env[IMAGE_STATS] = torch.randn(2, size)
    inputs, outputs = [*step.inputs, *TILE_INPUTS], [*step.outputs, TILE_STATS]
    axes = dynamic_axes_for(model, [*step.inputs, *step.outputs])
    axes.update({CORE_MASK: image_axes(0), IMAGE_STATS: {0: BATCH_DIM}, TILE_STATS: {0: BATCH_DIM}})
    graph = _to_onnx(TileSegmentGraph(tiles, step), tuple(env[n] for n in inputs), inputs, outputs, axes, opset)
    return graph, size


def export_expert(
    model: MoCEIR, adapter: int, expert: int, opset: int = DEFAULT_OPSET, trace_size: tuple[int, int] = (64, 96)
) -> onnx.ModelProto:
    """Expert ``expert`` of ``adapter`` with inputs ``adapter_in``, ``shared``, ``gate``."""
    level = model.config.adapter_levels()[adapter]
    feats = sample_tensor(model, AdapterTensors(adapter).adapter_in, 2, *trace_size)
    args = (feats, torch.randn_like(feats), torch.rand(2, 1))
    adapter_in, shared, gate = EXPERT_INPUTS
    axes = {name: image_axes(level) for name in (adapter_in, shared, EXPERT_OUTPUT)}
    axes[gate] = {0: BATCH_DIM}
    graph = ExpertGraph(export_form(model.adapter(adapter).expert(expert)))
    return _to_onnx(graph, args, list(EXPERT_INPUTS), [EXPERT_OUTPUT], axes, opset)


def save(model: onnx.ModelProto, path: Path) -> int:
    """Write ``model`` and return its size in bytes."""
    data = model.SerializeToString()
    write_bytes_atomic(path, data)
    return len(data)
