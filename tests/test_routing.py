"""Routing decisions and the one expert dispatch, on NumPy arrays."""

from __future__ import annotations

import numpy as np
import pytest

from moce.routing import dispatch, route


class NumpyRows:
    """RowOps on NumPy arrays that counts the scatters."""

    def __init__(self) -> None:
        self.scatters = 0

    def take(self, value: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return value[rows]

    def zeros_like(self, value: np.ndarray) -> np.ndarray:
        return np.zeros_like(value)

    def add_rows(self, out: np.ndarray, rows: np.ndarray, value: np.ndarray) -> np.ndarray:
        self.scatters += 1
        out[rows] += value
        return out


def test_top_k_without_noise_and_ties_to_the_lower_index():
    routing = route(np.array([[0.0, 2.0, 2.0, 1.0], [3.0, 0.0, 0.0, 0.0]]), 2)
    assert routing.experts.tolist() == [[1, 2], [0, 1]]
    np.testing.assert_allclose(routing.gates, np.take_along_axis(routing.probs, routing.experts, 1))
    np.testing.assert_allclose(routing.probs.sum(1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="batch, experts"):
        route(np.zeros(4), 1)


def test_gated_groups_list_each_chosen_expert_once_with_its_rows_and_gates():
    routing = route(np.array([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0]]), 1)
    groups = routing.gated_groups()
    assert [(e, rows.tolist()) for e, rows, _ in groups] == [(0, [0, 2]), (1, [1])]
    np.testing.assert_allclose(groups[0][2], routing.gates[[0, 2], 0])


@pytest.mark.parametrize("k", [1, 2])
def test_dispatch_equals_every_sample_run_through_its_own_experts(k):
    rng = np.random.default_rng(0)
    x, shared = rng.random((5, 2, 3, 3)), rng.random((5, 2, 3, 3))
    routing = route(rng.normal(size=(5, 4)) * 3, k)
    runs = []

    def run(expert: int, xs: np.ndarray, ss: np.ndarray, gates: np.ndarray) -> np.ndarray:
        runs.append(expert)
        return (xs * (expert + 1) + ss) * gates.reshape(-1, 1, 1, 1)

    got = dispatch(x, shared, routing.gated_groups(), 5, run, NumpyRows())
    want = np.stack(
        [sum((x[b] * (e + 1) + shared[b]) * g for e, g in zip(routing.experts[b], routing.gates[b])) for b in range(5)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert sorted(runs) == sorted(set(routing.experts.ravel().tolist()))  # each chosen expert once


def test_one_expert_for_the_whole_batch_needs_no_scatter():
    ops = NumpyRows()
    x = np.ones((3, 1, 2, 2))
    routing = route(np.tile([0.0, 9.0], (3, 1)), 1)
    out = dispatch(x, x, routing.gated_groups(), 3, lambda e, xs, ss, g: xs * g.reshape(-1, 1, 1, 1), ops)
    assert ops.scatters == 0
    np.testing.assert_allclose(out[:, 0, 0, 0], routing.gates[:, 0])
