"""Deterministic top-k routing decisions, shared by the PyTorch model and every runtime.

The router's logits are a few floats per sample, so decisions are made on the host in NumPy;
that is also where a runtime needs them to launch only the chosen expert graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    def repeat(self, batch: int) -> Routing:
        """This (single-row) routing applied to ``batch`` samples."""
        return Routing(*(np.repeat(a[:1], batch, axis=0) for a in (self.experts, self.gates, self.probs)))

    def row(self, index: int) -> Routing:
        return Routing(*(a[index : index + 1] for a in (self.experts, self.gates, self.probs)))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def route(logits: np.ndarray, k: int) -> Routing:
    """Top-k experts per sample without noise; ties go to the lower expert index."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"router logits must be [batch, experts], got shape {logits.shape}")
    probs = softmax(logits)
    experts = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
    gates = np.take_along_axis(probs, experts, axis=1)
    return Routing(experts=experts, gates=gates, probs=probs)
