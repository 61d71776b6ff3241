"""Tensor names at the graphs' boundaries, defined once for the exporter, the package and the runtimes."""

from __future__ import annotations

EXPERT_INPUTS = ("adapter_in", "shared", "gate")
EXPERT_OUTPUT = "weighted_out"


def route_name(adapter: int) -> str:
    """Whole-network graphs output each adapter's chosen experts under this name."""
    return f"route{adapter}"


def probs_name(adapter: int) -> str:
    """... and the router's softmax under this one."""
    return f"router_probs{adapter}"
