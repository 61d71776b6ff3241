"""The runners: ONNX Runtime session options and profiling, the torch runner's memory layout."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from moce.errors import PackageError
from moce.runtime.executor import PlanExecutor
from moce.runtime.ort_loader import ORT_SESSION_CONFIG
from moce.runtime.runners import OnnxRuntimeRunner, TorchRunner
from tests.recording import record_calls


def test_sessions_get_the_default_config_plus_the_callers_entries(tiny_pkg):
    extra = {"session.dynamic_block_base": "4"}
    image = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(tiny_pkg, threads=1, session_config=extra) as runner:
        PlanExecutor(tiny_pkg, runner).run(image, "split")
        sessions = list(runner._sessions.values())
    assert len(sessions) > 1
    for session in sessions:
        options = session.get_session_options()
        for key, value in {**ORT_SESSION_CONFIG, **extra}.items():
            assert options.get_session_config_entry(key) == value
    assert OnnxRuntimeRunner(tiny_pkg).session_config == dict(ORT_SESSION_CONFIG)


def test_profiling_writes_one_trace_per_graph_with_its_kernels(tiny_pkg, tmp_path):
    image = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    with OnnxRuntimeRunner(tiny_pkg, threads=1, profile_dir=tmp_path) as runner:
        calls = record_calls(runner)
        PlanExecutor(tiny_pkg, runner).run(image, "split")
        traces = runner.end_profiling()
    assert set(traces) == {graph for graph, _ in calls}
    for graph, trace in traces.items():
        assert Path(trace).parent == tmp_path and Path(trace).name.startswith(graph)
        events = json.loads(Path(trace).read_text())
        assert any(e.get("cat") == "Node" and e["args"].get("op_name") == "Conv" for e in events)
    assert OnnxRuntimeRunner(tiny_pkg).end_profiling() == {}


def test_channels_last_gives_the_same_restoration(tiny_model, tiny_pkg, golden_io):
    nhwc_model = copy.deepcopy(tiny_model)  # runners move the model they are given in place
    with TorchRunner(tiny_model, "cpu") as plain, TorchRunner(nhwc_model, "cpu", channels_last=True) as nhwc:
        want = PlanExecutor(tiny_pkg, plain).run(golden_io["input"])
        got = PlanExecutor(tiny_pkg, nhwc).run(golden_io["input"])
        assert nhwc.model.patch_embed.proj.weight.is_contiguous(memory_format=torch.channels_last)
        assert not plain.channels_last  # the default off CUDA
    np.testing.assert_allclose(got.restored, want.restored, atol=1e-5)
    assert [r.experts.tolist() for r in got.routings] == [r.experts.tolist() for r in want.routings]


def test_every_segment_and_expert_compiles_whole_and_agrees_with_eager(tiny_model, tiny_pkg, golden_io):
    """fullgraph=True: a graph break anywhere in a plan step fails here. AOT autograd traces what
    inductor would compile (inductor's own code generation takes minutes for the tiny model on two
    cores, so `moce bench --backends torch-compile` times it instead)."""
    compiled_model = copy.deepcopy(tiny_model)
    torch._dynamo.reset()
    with TorchRunner(tiny_model, "cpu") as eager, TorchRunner(compiled_model, "cpu") as compiled:
        compiled.compile(backend="aot_eager")
        want = PlanExecutor(tiny_pkg, eager).run(golden_io["input"])
        got = PlanExecutor(tiny_pkg, compiled).run(golden_io["input"])
        frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        again = PlanExecutor(tiny_pkg, compiled).run(golden_io["input"])
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames > 0  # no recompilation
    np.testing.assert_allclose(got.restored, want.restored, atol=1e-4)
    np.testing.assert_array_equal(again.restored, got.restored)
    assert [r.experts.tolist() for r in got.routings] == [r.experts.tolist() for r in want.routings]


def test_runners_keep_polygraphys_contract_activation_guard_and_input_checks(tiny_pkg):
    runner = OnnxRuntimeRunner(tiny_pkg, threads=1)
    image = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(PackageError, match="must be activated before it runs segment0"):
        runner.infer("segment0", {"image": image})
    runner.deactivate()  # inactive: nothing to release, no error
    with runner:
        runner.activate()  # a second activation does nothing
        assert runner.is_active
        specs = runner.get_input_metadata("segment0")
        assert [s.name for s in specs] == ["image"]
        with pytest.raises(PackageError, match="segment0 takes image; missing \\['image'\\], unexpected \\['img'\\]"):
            runner.infer("segment0", {"img": image})
        with pytest.raises(PackageError, match="input image has 3 dimensions, the graph takes 4"):
            runner.infer("segment0", {"image": image[0]})
        assert set(runner.infer("segment0", {"image": image})) >= {"freq_emb"}
    assert not runner.is_active and not hasattr(runner, "calls")  # no per-call log grows in a long-lived server
