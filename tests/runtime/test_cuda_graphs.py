"""CUDA graph replay on the torch backend: the cache and the row buckets, on the CPU with a stand-in
capture (capturing itself needs a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moce.apps.bench import bench_device
from moce.apps.bench_cases import BenchOptions
from moce.errors import InputError, MoceError
from moce.names import EXPERT_INPUTS
from moce.runtime.backends import make_runner
from moce.runtime.cuda_graphs import GraphCache, bucket_rows
from moce.runtime.executor import PlanExecutor, TileFeeds
from moce.runtime.runners import TorchRunner


class StandInCapture:
    """Records what would be captured; its "replay" runs the function on the new feeds."""

    def __init__(self) -> None:
        self.keys: list[tuple] = []

    def __call__(self, fn, feeds):  # noqa: ANN001, ANN204
        self.keys.append(GraphCache.key("?", feeds)[1:])
        return fn


def test_rows_are_padded_to_powers_of_two():
    assert [bucket_rows(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [1, 2, 4, 4, 8, 8, 16]


def test_the_cache_captures_once_per_graph_shape_and_dtype_and_drops_the_least_recent():
    capture = StandInCapture()
    cache = GraphCache(capture, limit=2)
    double = lambda feeds: {"y": feeds["x"] * 2}  # noqa: E731
    for x in (torch.ones(1, 3), torch.ones(1, 3), torch.ones(2, 3), torch.ones(1, 3, dtype=torch.float16)):
        assert torch.equal(cache.run("g", double, {"x": x})["y"], x * 2)
    assert cache.captures == 3 and len(cache.replays) == 2  # the first shape was dropped for the third key
    cache.run("g", double, {"x": torch.ones(1, 3)})
    assert cache.captures == 4


def test_replayed_plan_matches_the_plain_torch_runner_with_bucketed_experts(tiny_model, tiny_pkg, golden_io):
    image = golden_io["input"][:3]  # three images: experts see 1, 2 or 3 rows
    with TorchRunner(tiny_model, "cpu") as plain:
        want = PlanExecutor(tiny_pkg, plain).run(image)
    capture = StandInCapture()
    with TorchRunner(tiny_model, "cpu") as replayed:
        replayed.use_cuda_graphs(capture)
        got = PlanExecutor(tiny_pkg, replayed).run(image)
        again = PlanExecutor(tiny_pkg, replayed).run(image)
        captured = len(capture.keys)
        PlanExecutor(tiny_pkg, replayed).run(image, tiles=TileFeeds(np.ones((3, 1, *image.shape[2:]), np.float32)))
    np.testing.assert_allclose(got.restored, want.restored, atol=1e-6)
    assert [r.experts.tolist() for r in got.routings] == [r.experts.tolist() for r in want.routings]
    np.testing.assert_array_equal(again.restored, got.restored)
    experts = [key for key in capture.keys if EXPERT_INPUTS[0] in {name for name, _, _ in key}]
    expert_rows = {shape[0] for key in experts for _, shape, _ in key}
    segment_rows = {shape[0] for key in capture.keys if key not in experts for _, shape, _ in key}
    assert expert_rows and expert_rows <= {1, 2, 4} and segment_rows == {3}  # experts run on power-of-two rows
    assert len(capture.keys) == captured  # the second run replays; tile segments are never captured


def test_cuda_graphs_need_the_torch_backend_on_a_cuda_device(tiny_pkg):
    with pytest.raises(MoceError, match="--cuda-graphs needs the torch backend on a CUDA device"):
        make_runner("torch", tiny_pkg, device="cpu", cuda_graphs=True)
    with pytest.raises(InputError, match="torch-graphs replays CUDA graphs"):
        bench_device(BenchOptions(["torch-graphs"], ["split"], [64], [1], device="cpu"))
