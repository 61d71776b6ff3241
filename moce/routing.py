"""Deterministic top-k routing decisions, shared by the PyTorch model and every runtime.

The router's logits are a few floats per sample, so decisions are made on the host in NumPy;
that is also where a runtime needs them to launch only the chosen expert graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Routing:
    """Routing of one adapter for a batch.

    ``experts[b]`` are sample b's chosen experts, best first; ``gates[b]`` their softmax
    probabilities (which scale the experts' outputs); ``probs`` the full softmax.
    """

    experts: np.ndarray  # int64 [B, k]
    gates: np.ndarray  # float32 [B, k]
    probs: np.ndarray  # float32 [B, E]

    def groups(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(expert, rows, slots)`` for every expert chosen by at least one sample.

        ``rows`` are the batch indices routed to the expert and ``slots`` which of their k
        choices it is, so each chosen expert runs once on its sub-batch.
        """
        out = []
        for expert in np.unique(self.experts):
            rows, slots = np.nonzero(self.experts == expert)
            out.append((int(expert), rows, slots))
        return out

    def gated_groups(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(expert, rows, gates)``: :meth:`groups` with each row's gate for the expert, for :func:`dispatch`."""
        return [(expert, rows, self.gates[rows, slots]) for expert, rows, slots in self.groups()]

    def repeat(self, batch: int) -> Routing:
        """This (single-row) routing applied to ``batch`` samples."""
        return Routing(*(np.repeat(a[:1], batch, axis=0) for a in (self.experts, self.gates, self.probs)))

    def row(self, index: int) -> Routing:
        return Routing(*(a[index : index + 1] for a in (self.experts, self.gates, self.probs)))


class RowOps(Protocol[T]):
    """What :func:`dispatch` needs of an array type: NumPy, torch tensors, a runner's device arrays."""

    def take(self, value: T, rows: Any) -> T:
        """``value[rows]``."""

    def zeros_like(self, value: T) -> T: ...

    def add_rows(self, out: T, rows: Any, value: T) -> T:
        """``out[rows] += value``; returns the sum (in place where the array type allows)."""


def dispatch(
    x: T,
    shared: T,
    groups: Iterable[tuple[int, Any, Any]],
    batch: int,
    run: Callable[[int, T, T, Any], T],
    ops: RowOps[T],
) -> T:
    """The one expert dispatch: each ``(expert, rows, gates)`` group runs its expert once on its rows,
    ``run(expert, x_rows, shared_rows, gates)`` returns the gate-weighted output, and the outputs
    are summed into their rows.

    ``rows`` are sorted and unique within a group (an expert is chosen at most once per sample),
    so a group of ``batch`` rows is the whole batch: it runs on ``x`` as it is, and with top-1
    routing its output is the result without a copy.
    """
    out = None
    for expert, rows, gates in groups:
        whole = len(rows) == batch
        y = run(expert, x if whole else ops.take(x, rows), shared if whole else ops.take(shared, rows), gates)
        if out is None and whole:
            out = y
        else:
            out = ops.add_rows(ops.zeros_like(x) if out is None else out, rows, y)
    return ops.zeros_like(x) if out is None else out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


Route = tuple[tuple[int, ...], ...]
"""Experts imposed on an image, per adapter (best first): a video shot's, or the API's ``route=``."""


def impose(logits: np.ndarray, experts: tuple[int, ...]) -> Routing:
    """Every sample runs ``experts``, each gated by the sample's own router probability for it: the
    expert choice is imposed, the weighting stays the image's (as the network would weight it)."""
    probs = softmax(np.asarray(logits, dtype=np.float32))
    chosen = np.repeat(np.asarray(experts, dtype=np.int64)[None], probs.shape[0], axis=0)
    return Routing(experts=chosen, gates=np.take_along_axis(probs, chosen, axis=1), probs=probs)


def route(logits: np.ndarray, k: int) -> Routing:
    """Top-k experts per sample without noise; ties go to the lower expert index."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"router logits must be [batch, experts], got shape {logits.shape}")
    probs = softmax(logits)
    experts = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
    gates = np.take_along_axis(probs, experts, axis=1)
    return Routing(experts=experts, gates=gates, probs=probs)
