"""The routed forward with the expert choice on the device: every branch policy against the split plan,
no host read while IF nodes are captured, and the torch runner's conditional form (CPU stand-ins for
the CUDA graph and its IF nodes)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from moce.model import load_model
from moce.names import IMAGE, RESTORED, route_name
from moce.routing import route
from moce.runtime.cuda_graphs import GraphCache
from moce.runtime.device_routing import (
    EveryBranch,
    GraphBranches,
    HostBranches,
    conditional_nodes_missing,
    device_routes,
    routed_forward,
)
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import TorchRunner
from tests.conftest import TINY_CKPT

HOST_READS = {"__bool__", "__int__", "__float__", "__index__", "item", "cpu", "tolist", "numpy", "nonzero", "unique"}


class NoHostReads(TorchFunctionMode):
    """Fails on any tensor operation that makes the host wait for the device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            raise AssertionError(f"host read {name} during capture")
        return func(*args, **(kwargs or {}))


class StandInIf:
    """What an IF node does at replay, run eagerly: the GPU evaluates the predicate, then runs or skips."""

    def __init__(self) -> None:
        self.ran: list[int] = []

    def candidates(self, experts, num_experts: int) -> list[int]:  # noqa: ANN001
        return list(range(num_experts))

    def when(self, pred, body) -> None:  # noqa: ANN001
        assert pred.dtype == torch.bool and pred.ndim == 0
        if bool(pred):
            self.ran.append(1)
            body()


class RecordingGraph:
    """Stands in for a capturing ``torch.cuda.CUDAGraph``: records IF nodes and checks they nest."""

    def __init__(self) -> None:
        self.open = 0
        self.nodes: list[torch.Tensor] = []

    def begin_capture_to_if_node(self, pred: torch.Tensor) -> None:
        assert self.open == 0, "IF nodes of one forward do not nest"
        self.open += 1
        self.nodes.append(pred)

    def end_capture_to_conditional_node(self) -> None:
        self.open -= 1


def _split(model, image: np.ndarray):  # noqa: ANN001, ANN202
    with torch.inference_mode():
        restored, routings = model.run_plan(torch.from_numpy(image))
    return restored.numpy(), [r.experts for r in routings]


@pytest.fixture(scope="module", params=[1, 2], ids=["top1", "top2"])
def model(request):  # noqa: ANN001, ANN201
    return load_model(TINY_CKPT, top_k=request.param)[0]


def test_device_routes_choose_as_the_host_does_ties_included():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 4)).astype(np.float32)
    logits[:8] = 0.5  # all tied: the lower index wins on both sides
    logits[8:16, 1] = logits[8:16, 3]
    for k in (1, 2):
        experts, gates, probs = device_routes(torch.from_numpy(logits), k)
        want = route(logits, k)
        np.testing.assert_array_equal(experts.numpy(), want.experts)
        np.testing.assert_allclose(gates.numpy(), want.gates, rtol=1e-6)
        np.testing.assert_allclose(probs.numpy(), want.probs, rtol=1e-6)


@pytest.mark.parametrize("policy", [HostBranches, EveryBranch, StandInIf])
def test_every_branch_policy_restores_as_the_split_plan(model, golden_io, policy):
    image = golden_io["input"]  # four images, routed to different experts
    want, want_routes = _split(model, image)
    with torch.inference_mode():
        got = routed_forward(model, torch.from_numpy(image), policy())
    np.testing.assert_allclose(got[RESTORED].numpy(), want, atol=1e-5)
    for a, experts in enumerate(want_routes):
        np.testing.assert_array_equal(got[route_name(a)].numpy(), experts)


def test_only_chosen_experts_run_and_the_host_reads_once_per_adapter(model, golden_io):
    image = torch.from_numpy(golden_io["input"])
    _, routes = _split(model, golden_io["input"])
    chosen = sum(len(np.unique(e)) for e in routes)
    if_nodes, host = StandInIf(), HostBranches()
    with torch.inference_mode():
        routed_forward(model, image, if_nodes)
        routed_forward(model, image, host)
    assert len(if_nodes.ran) == chosen < len(routes) * model.config.num_experts
    assert host.host_reads == len(routes)


def test_capture_makes_one_if_node_per_expert_and_never_reads_on_the_host(model, golden_io):
    graph = RecordingGraph()
    with torch.inference_mode(), NoHostReads():
        routed_forward(model, torch.from_numpy(golden_io["input"][:1]), GraphBranches(graph))
    assert graph.open == 0 and len(graph.nodes) == model.config.num_adapters * model.config.num_experts
    assert all(p.dtype == torch.bool and p.ndim == 0 for p in graph.nodes)
    with pytest.raises(AssertionError, match="host read"), torch.inference_mode(), NoHostReads():
        routed_forward(model, torch.from_numpy(golden_io["input"][:1]), HostBranches())  # the detector works


class StandInBranchCapture:
    """Records each capture of the conditional forward; its "replay" runs it with stand-in IF nodes."""

    def __init__(self) -> None:
        self.keys: list[tuple] = []

    def __call__(self, fn, feeds):  # noqa: ANN001, ANN204
        self.keys.append(GraphCache.key("conditional", feeds))
        return lambda new: fn(new, StandInIf())


def test_the_torch_runner_runs_the_conditional_form_plain_and_captured(tiny_model, tiny_pkg, golden_io):
    image = golden_io["input"]
    with TorchRunner(tiny_model, "cpu") as plain:
        want = PlanExecutor(tiny_pkg, plain).run(image)
        eager = PlanExecutor(tiny_pkg, plain).run(image, "conditional")
    capture = StandInBranchCapture()
    with TorchRunner(tiny_model, "cpu") as replayed:
        replayed.use_cuda_graphs(lambda fn, feeds: fn, capture)
        got = PlanExecutor(tiny_pkg, replayed).run(image, "conditional")
        again = PlanExecutor(tiny_pkg, replayed).run(image, "conditional")
    for result in (eager, got):
        np.testing.assert_allclose(result.restored, want.restored, atol=1e-5)
        assert [r.experts.tolist() for r in result.routings] == [r.experts.tolist() for r in want.routings]
        np.testing.assert_allclose(result.routings[0].gates, want.routings[0].gates, rtol=1e-6)
    np.testing.assert_array_equal(again.restored, got.restored)
    assert len(capture.keys) == 1  # one capture of the whole batch, replayed after
    assert capture.keys[0][1] == (IMAGE, (4, 3, 64, 96), "torch.float32")


def test_without_conditional_nodes_the_runner_says_so_and_the_host_chooses(tiny_model, tiny_pkg, golden_io):
    assert conditional_nodes_missing() == "no CUDA device"
    with TorchRunner(tiny_model, "cpu") as runner:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runner.use_cuda_graphs(lambda fn, feeds: fn)
            PlanExecutor(tiny_pkg, runner).run(golden_io["input"][:1])  # split: nothing to say
        with pytest.warns(UserWarning, match=r"not captured as one CUDA graph \(no CUDA device\)"):
            result = PlanExecutor(tiny_pkg, runner).run(golden_io["input"][:1], "conditional")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            PlanExecutor(tiny_pkg, runner).run(golden_io["input"][:1], "conditional")  # said once
    np.testing.assert_allclose(result.restored, golden_io["output"][:1], atol=1e-4)


@pytest.mark.gpu
def test_one_captured_graph_follows_each_images_own_routes_on_cuda(tiny_pkg, golden_io):
    """The IF nodes themselves: one graph captured on the first image, replayed on images that choose
    other experts, matches the split plan image by image."""
    images = [golden_io["input"][i : i + 1] for i in range(4)]
    with TorchRunner(load_model(TINY_CKPT)[0], "cuda") as plain:
        want = [PlanExecutor(tiny_pkg, plain).run(image) for image in images]
    with TorchRunner(load_model(TINY_CKPT)[0], "cuda") as runner:
        runner.use_cuda_graphs()
        got = [PlanExecutor(tiny_pkg, runner).run(image, "conditional") for image in images]
        assert runner._graph_cache.captures == 1
    assert len({tuple(r.experts[0, 0] for r in w.routings) for w in want}) > 1  # the images route apart
    for w, g in zip(want, got):
        np.testing.assert_allclose(g.restored, w.restored, atol=1e-4)
        assert [r.experts.tolist() for r in g.routings] == [r.experts.tolist() for r in w.routings]
