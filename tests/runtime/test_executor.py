"""The plan executor: routes on the host, runs each chosen expert graph once on its rows, sums by gate.

Most tests use a NumPy stand-in runner whose "graphs" are simple arithmetic, so the dispatch is
checked exactly; one runs the tiny package on ONNX Runtime against the golden routes.
"""

from __future__ import annotations

import numpy as np
import pytest

from moce.names import EXPERT_INPUTS, EXPERT_OUTPUT, RESTORED
from moce.package.manifest import SegmentEntry
from moce.routing import Routing
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import GraphRunner, OnnxRuntimeRunner
from tests.recording import record_calls


class StandIn(GraphRunner):
    """Segments pass rows through (row b of every tensor holds b + 1) and emit the given router
    logits; expert e of any adapter returns ``adapter_in * (e + 1) * gate``; the last segment
    returns the last adapter's output as the restored image."""

    name = "stand-in"

    def __init__(self, manifest, logits: dict[int, np.ndarray]) -> None:
        super().__init__()
        self.steps = {s.graph: s for s in manifest.plan_entries if isinstance(s, SegmentEntry)}
        self.logit_names = {a.logits: logits[a.index] for a in manifest.adapters() if a.index in logits}
        self.experts = {e.graph: e.expert for a in manifest.adapters() for e in a.experts}
        self.rows_seen: list[tuple[str, list[int]]] = []

    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if graph in self.experts:
            x, _, gate = (feeds[n] for n in EXPERT_INPUTS)
            self.rows_seen.append((graph, x[:, 0, 0, 0].astype(int).tolist()))
            return {EXPERT_OUTPUT: x * (self.experts[graph] + 1) * gate.reshape(-1, 1, 1, 1)}
        step = self.steps[graph]
        batch = next(iter(feeds.values())).shape[0]
        rows = np.arange(1, batch + 1, dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 2, 4, 4), np.float32)
        out = {n: self.logit_names.get(n, rows) for n in step.outputs}
        if RESTORED in step.outputs:
            out[RESTORED] = feeds[step.inputs[1]]  # the last adapter's output
        return out


def _logits(batch_routes: list[int], experts: int = 4) -> np.ndarray:
    logits = np.zeros((len(batch_routes), experts), np.float32)
    logits[np.arange(len(batch_routes)), batch_routes] = 5.0
    return logits


def test_each_chosen_expert_runs_once_on_its_rows_and_outputs_are_gate_weighted(tiny_pkg):
    routes = {a.index: [0, 2, 0] for a in tiny_pkg.adapters()}
    runner = StandIn(tiny_pkg, {a: _logits(r) for a, r in routes.items()})
    runner.activate()  # runners run only when active (Polygraphy's contract)
    result = PlanExecutor(tiny_pkg, runner).run(np.zeros((3, 3, 16, 16), np.float32))
    last = tiny_pkg.adapters()[-1]
    assert [(g, rows) for g, rows in runner.rows_seen if g.startswith(f"adapter{last.index}.")] == [
        (last.experts[0].graph, [1, 3]),
        (last.experts[2].graph, [2]),
    ]
    gates = result.routings[-1].gates[:, 0]
    want = np.array([1 * 1, 2 * 3, 3 * 1], np.float32) * gates
    np.testing.assert_allclose(result.restored[:, 0, 0, 0], want, rtol=1e-6)
    assert [c for c in result.expert_calls if c[0] == last.index] == [(last.index, 0, 2), (last.index, 2, 1)]


def test_a_whole_batch_on_one_expert_runs_it_on_the_batch_as_it_is(tiny_pkg):
    runner = StandIn(tiny_pkg, {a.index: _logits([1, 1]) for a in tiny_pkg.adapters()})
    runner.activate()  # runners run only when active (Polygraphy's contract)
    added = []
    runner.add_rows = lambda out, rows, value: added.append(rows)  # would be called by a scatter
    result = PlanExecutor(tiny_pkg, runner).run(np.zeros((2, 3, 16, 16), np.float32))
    assert added == [] and all(rows == [1, 2] for _, rows in runner.rows_seen)
    np.testing.assert_allclose(result.restored[:, 0, 0, 0], np.array([1, 2]) * 2 * result.routings[-1].gates[:, 0])


def test_forced_routes_override_the_routers(tiny_pkg):
    runner = StandIn(tiny_pkg, {a.index: _logits([0, 0]) for a in tiny_pkg.adapters()})
    runner.activate()  # runners run only when active (Polygraphy's contract)
    forced = [
        Routing(np.array([[3]]), np.array([[1.0]], np.float32), np.eye(4, dtype=np.float32)[3:])
        for _ in tiny_pkg.adapters()
    ]
    result = PlanExecutor(tiny_pkg, runner).run(np.zeros((2, 3, 16, 16), np.float32), forced=forced)
    assert all((r.experts == 3).all() for r in result.routings)
    assert {g for g, _ in runner.rows_seen} == {a.experts[3].graph for a in tiny_pkg.adapters()}


def test_modes_that_cannot_take_forced_routes_or_tiles_are_refused(tiny_pkg):
    executor = PlanExecutor(tiny_pkg, StandIn(tiny_pkg, {}))
    with pytest.raises(ValueError, match="split routing mode"):
        executor.run(np.zeros((1, 3, 16, 16), np.float32), "dense", forced=[])
    with pytest.raises(ValueError, match="unknown routing mode"):
        executor.run(np.zeros((1, 3, 16, 16), np.float32), "sparse")


def test_split_plan_runs_only_the_chosen_experts(tiny_pkg, golden_io):
    with OnnxRuntimeRunner(tiny_pkg) as runner:
        calls = record_calls(runner)
        result = PlanExecutor(tiny_pkg, runner).run(golden_io["input"], "split")
        graphs_run = [g for g, _ in calls if g.startswith("adapter")]
    routes = golden_io["routes"]
    expected = sorted(f"adapter{a}.expert{e}" for a in range(routes.shape[1]) for e in np.unique(routes[:, a]))
    assert sorted(graphs_run) == expected
    assert sorted(result.expert_calls) == sorted(
        (a, int(e), int((routes[:, a] == e).sum())) for a in range(routes.shape[1]) for e in np.unique(routes[:, a])
    )
