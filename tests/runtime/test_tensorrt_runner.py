"""The TensorRT runner against the test double (tests/engines/fake_tensorrt.py) on a CPU stand-in
stream: stream order, one host wait per adapter plus the final image, engine dtypes, untouched feeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moce.names import EXPERT_INPUTS, EXPERT_OUTPUT, FREQ_EMB, RESTORED
from moce.package.manifest import EngineEntry, SegmentEntry
from moce.runtime.executor import PlanExecutor
from moce.runtime.tensorrt_runner import TensorRTRunner, engine_graphs
from tests.engines.fake_tensorrt import CpuStream, FakeTensorRT, Program

EXPERTS = 4


def _segment(step: SegmentEntry, logits: dict[str, np.ndarray]) -> Program:
    """Rows pass through (row b holds b + 1), router logits come from ``logits`` as HALF, and the
    last segment returns the last adapter's output as the image."""

    def shapes(inputs: dict[str, tuple]) -> dict[str, tuple]:
        n = next(iter(inputs.values()))[0]
        return {
            name: (n, EXPERTS) if name in logits else (n, 2) if name == FREQ_EMB else (n, 2, 4, 4)
            for name in step.outputs
        }

    def compute(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = next(iter(feeds.values())).shape[0]
        rows = np.arange(1, n + 1, dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 2, 4, 4), np.float32)
        out = {name: logits[name] if name in logits else rows for name in step.outputs}
        if FREQ_EMB in out:
            out[FREQ_EMB] = rows[:, :, 0, 0]  # an embedding per row, as the real segment gives
        if RESTORED in step.outputs:
            out[RESTORED] = feeds[step.inputs[1]]
        return out

    inputs = {name: "FLOAT" for name in step.inputs}
    return Program(inputs, {n: "HALF" if n in logits else "FLOAT" for n in step.outputs}, shapes, compute)


def _expert(expert: int) -> Program:
    return Program(
        {name: "FLOAT" for name in EXPERT_INPUTS},
        {EXPERT_OUTPUT: "FLOAT"},
        lambda shapes: {EXPERT_OUTPUT: shapes[EXPERT_INPUTS[0]]},
        lambda f: {EXPERT_OUTPUT: f["adapter_in"] * (expert + 1) * f["gate"].reshape(-1, 1, 1, 1)},
    )


@pytest.fixture()
def runner(tmp_path, tiny_pkg):
    """A TensorRT runner on fake engines of the tiny package's split graphs, routes [0, 2, 0]."""
    routes = [0, 2, 0]
    logits = {}
    for adapter in tiny_pkg.adapters():
        table = np.zeros((len(routes), EXPERTS), np.float16)
        table[np.arange(len(routes)), routes] = 5
        logits[adapter.logits] = table
    trt = FakeTensorRT()
    entries = []
    for name in engine_graphs(tiny_pkg, "fp32"):
        path = tmp_path / "engines" / f"{name}.engine"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode())
        graph_sha256 = tiny_pkg.graphs("fp32")[name].sha256  # engines of these graphs, for this TensorRT and GPU
        entries.append(
            EngineEntry(name, "fp32", str(path), "0" * 64, graph_sha256, trt.__version__, "fake", "0.0", [], "d")
        )
    for step in tiny_pkg.plan_entries:
        if isinstance(step, SegmentEntry):
            trt.programs[step.graph.encode()] = _segment(step, logits)
        else:
            trt.programs.update({e.graph.encode(): _expert(e.expert) for e in step.experts})
    manifest = type(tiny_pkg)(**{**vars(tiny_pkg), "engines": entries})
    with TensorRTRunner(manifest, "fp32", stream=CpuStream(), trt=trt, gpu=("fake", "0.0")) as r:
        yield r


def test_the_plan_runs_with_one_host_wait_per_adapter_and_one_for_the_image(runner, tiny_pkg):
    result = PlanExecutor(runner.manifest, runner).run(np.zeros((3, 3, 16, 16), np.float32))
    adapters = len(tiny_pkg.adapters())
    assert runner.stream.syncs == adapters + 1  # the router logits of each adapter, then the image
    gates = result.routings[-1].gates[:, 0]
    np.testing.assert_allclose(result.restored[:, 0, 0, 0], np.array([1, 2 * 3, 3]) * gates, rtol=1e-6)
    assert all(r.experts[:, 0].tolist() == [0, 2, 0] for r in result.routings)
    assert len(runner.stream.launches) == adapters + 1 + 2 * adapters  # segments, then two experts each


def test_output_buffers_take_the_engines_dtypes(runner, tiny_pkg):
    step = tiny_pkg.plan_entries[0]
    made = runner.infer(step.graph, {step.inputs[0]: runner.arrays.from_host(np.zeros((3, 3, 16, 16), np.float32))})
    logits = tiny_pkg.adapters()[0].logits
    assert made[logits].dtype == torch.float16 and made[step.outputs[0]].dtype == torch.float32


def test_the_callers_feeds_are_not_changed(runner, tiny_pkg):
    graph = tiny_pkg.adapters()[0].experts[1].graph
    x = torch.arange(2 * 2 * 8 * 4, dtype=torch.float32).reshape(2, 2, 4, 8).transpose(2, 3)  # not contiguous
    feeds = {"adapter_in": x, "shared": torch.ones(2, 2, 8, 4), "gate": torch.full((2, 1), 0.5)}
    before = {k: (v, v.clone()) for k, v in feeds.items()}
    out = runner.infer(graph, feeds)[EXPERT_OUTPUT]
    assert list(feeds) == list(before) and all(feeds[k] is v and torch.equal(v, c) for k, (v, c) in before.items())
    torch.testing.assert_close(out, x * 2 * 0.5)


def test_inputs_from_the_callers_stream_are_waited_for(runner, tiny_pkg, monkeypatch):
    graph = tiny_pkg.adapters()[0].experts[0].graph
    stream = runner.stream
    feeds = {
        name: stream.caller_tensor(np.ones((1, 2, 4, 4) if name != "gate" else (1, 1), np.float32))
        for name in EXPERT_INPUTS
    }
    runner.infer(graph, feeds)  # the runner makes its stream wait for the caller's first
    feeds = {
        name: stream.caller_tensor(np.ones((1, 2, 4, 4) if name != "gate" else (1, 1), np.float32))
        for name in EXPERT_INPUTS
    }
    monkeypatch.setattr(stream, "wait_for_caller", lambda: None)
    with pytest.raises(AssertionError, match="without an event wait"):
        runner.infer(graph, feeds)
