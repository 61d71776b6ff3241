"""Tensor names at the graphs' boundaries, defined once for the exporter, the package and the runtimes."""

from __future__ import annotations

BATCH_DIM = "batch"
"""The symbolic batch axis of every graph input and output."""


def image_dims(level: int) -> tuple[str, str]:
    """The symbolic height and width axes of tensors at resolution ``level`` (0 = full size)."""
    return f"height_{level}", f"width_{level}"


def image_axes(level: int) -> dict[int, str]:
    """Dynamic axes of an ``[N, C, H, W]`` tensor at ``level``, as ``torch.onnx.export`` takes them."""
    return dict(zip((0, 2, 3), (BATCH_DIM, *image_dims(level))))


EXPERT_INPUTS = ("adapter_in", "shared", "gate")
EXPERT_OUTPUT = "weighted_out"


def route_name(adapter: int) -> str:
    """Whole-network graphs output each adapter's chosen experts under this name."""
    return f"route{adapter}"


def probs_name(adapter: int) -> str:
    """... and the router's softmax under this one."""
    return f"router_probs{adapter}"
