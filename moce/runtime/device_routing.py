"""The routed forward with the expert choice made on the device (the torch backend's ``conditional``).

The split plan reads each adapter's router logits on the host to launch only the chosen experts:
one host wait per adapter. Here the top-k choice is made with tensor operations, and each expert
runs inside a *branch* whose predicate is a 0-d device tensor ("some row chose this expert").
What a branch does decides where the choice is acted on:

* :class:`HostBranches`: the host reads each adapter's choice once and runs the chosen experts
  (eager PyTorch, and the fallback when conditional CUDA-graph nodes are missing);
* :class:`GraphBranches`: each branch is captured as a CUDA-graph IF node, so one graph replay
  runs the whole forward and the GPU itself skips the experts nobody chose;
* :class:`EveryBranch`: every expert runs (warm-up before a capture, so every kernel is loaded).

An expert's output is added with a per-row weight of its gate where the row chose it and zero
elsewhere, so running a branch that no row chose changes nothing: every policy gives the same
result, which the tests check on the CPU. Capturing IF nodes needs a CUDA device and a PyTorch
whose ``CUDAGraph`` has ``begin_capture_to_if_node`` (:func:`conditional_nodes_missing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from moce.model.plan import AdapterStep, SegmentStep, walk
from moce.names import IMAGE, RESTORED, probs_name, route_name

Tensor = Any  # torch.Tensor; torch is imported by the callers (the torch backend only)


class Branches(Protocol):
    """How an adapter's experts are run: ``candidates`` lists the experts worth a branch, ``when``
    runs ``body`` if ``pred`` (a 0-d bool tensor on the device) holds."""

    def candidates(self, experts: Tensor, num_experts: int) -> list[int]: ...

    def when(self, pred: Tensor, body: Callable[[], None]) -> None: ...


class HostBranches:
    """The choice read on the host, one read per adapter; only chosen experts get a branch."""

    def __init__(self) -> None:
        self.host_reads = 0

    def candidates(self, experts: Tensor, num_experts: int) -> list[int]:
        self.host_reads += 1
        return sorted({int(e) for e in experts.flatten().cpu().tolist()})

    def when(self, pred: Tensor, body: Callable[[], None]) -> None:
        body()


class EveryBranch:
    """Every expert runs (its weight is zero on rows that did not choose it)."""

    def candidates(self, experts: Tensor, num_experts: int) -> list[int]:
        return list(range(num_experts))

    def when(self, pred: Tensor, body: Callable[[], None]) -> None:
        body()


class GraphBranches:
    """Each branch becomes an IF node of the CUDA graph ``graph`` being captured: at replay the GPU
    evaluates the predicate and runs or skips the expert, with no host involved."""

    def __init__(self, graph: Any) -> None:  # torch.cuda.CUDAGraph, capturing
        self.graph = graph

    def candidates(self, experts: Tensor, num_experts: int) -> list[int]:
        return list(range(num_experts))

    def when(self, pred: Tensor, body: Callable[[], None]) -> None:
        self.graph.begin_capture_to_if_node(pred)
        try:
            body()
        finally:
            self.graph.end_capture_to_conditional_node()


def device_routes(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`moce.routing.route` with tensor operations: ``(experts [B, k], gates [B, k], probs [B, E])``.

    Softmax in float64 then float32 and a stable descending sort, as on the host, so ties go to
    the lower expert index and both sides choose alike.
    """
    import torch

    probs = torch.softmax(logits.double(), dim=-1).float()
    experts = torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :k]
    return experts, probs.gather(1, experts), probs


def mix_on_device(
    adapter: Any, x: Tensor, shared: Tensor, experts: Tensor, gates: Tensor, branches: Branches
) -> Tensor:
    """``sum_k gate_k * expert_k(x, shared)`` per row, each expert in one branch over the whole batch."""
    import torch

    out = torch.zeros_like(x)
    for e in branches.candidates(experts, len(adapter.experts)):
        chosen = experts == e  # [B, k]
        weight = (gates * chosen).sum(dim=1).to(x.dtype).view(-1, 1, 1, 1)
        rows = chosen.any(dim=1).view(-1, 1, 1, 1)

        def body(e: int = e, weight: Tensor = weight, rows: Tensor = rows) -> None:
            out.add_((adapter.expert(e)(x, shared) * weight).masked_fill_(~rows, 0))

        branches.when(chosen.any(), body)
    return out


def routed_forward(model: Any, image: Tensor, branches: Branches) -> dict[str, Tensor]:
    """The whole network on a padded batch: ``RESTORED`` plus each adapter's ``route_name`` (chosen
    experts) and ``probs_name`` (router softmax), the outputs of the package's conditional graph."""
    k = model.config.top_k
    routes: dict[str, Tensor] = {}

    def segment(step: SegmentStep, env: dict[str, Tensor]) -> dict[str, Tensor]:
        return model.run_segment(step.index, env)

    def adapter(step: AdapterStep, env: dict[str, Tensor]) -> Tensor:
        experts, gates, probs = device_routes(env[step.logits], k)
        routes[route_name(step.index)], routes[probs_name(step.index)] = experts, probs
        x, shared = (env[n] for n in step.inputs)
        return mix_on_device(model.adapter(step.index), x, shared, experts, gates, branches)

    env = walk(model.plan, {IMAGE: image}, segment, adapter)
    return {RESTORED: env[RESTORED], **routes}


def conditional_nodes_missing() -> str | None:
    """Why this PyTorch cannot capture IF nodes into CUDA graphs, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    if not hasattr(torch.cuda.CUDAGraph, "begin_capture_to_if_node"):
        return f"PyTorch {torch.__version__} has no conditional CUDA-graph nodes"
    major, minor = (int(p) for p in (torch.version.cuda or "0.0").split(".")[:2])
    if (major, minor) < (12, 4):
        return f"CUDA {torch.version.cuda} has no conditional graph nodes (12.4 or later)"
    return None
