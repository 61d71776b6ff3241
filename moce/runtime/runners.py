"""Backends as runners with one small interface (after Polygraphy's ``BaseRunner``).

A runner loads graphs of a model package by name and runs them on named NumPy arrays; it knows
nothing about routing, which the executor does.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from types import TracebackType

import numpy as np

from moce._lazy import require
from moce.export.manifest import Manifest


class GraphRunner(ABC):
    """``activate`` / ``infer`` / ``deactivate``, usable as a context manager."""

    name = "runner"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # (graph, batch) of every inference, for reports and tests

    def activate(self) -> None:
        """Acquire resources (sessions, engines); graphs may still load lazily on first use."""

    def deactivate(self) -> None:
        """Release every resource taken by ``activate`` or ``infer``."""

    @abstractmethod
    def _infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(feeds.values())).shape[0] if feeds else 0
        self.calls.append((graph, batch))
        return self._infer(graph, feeds)

    def __enter__(self) -> GraphRunner:
        self.activate()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.deactivate()


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class OnnxRuntimeRunner(GraphRunner):
    """ONNX Runtime sessions, created on first use of each graph (unused experts never load)."""

    name = "onnxruntime"

    def __init__(self, manifest: Manifest, providers: list[str] | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.manifest = manifest
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads or default_threads()
        self._sessions: dict[str, object] = {}

    def activate(self) -> None:
        self._ort = require("onnxruntime", "gpu" if "CUDAExecutionProvider" in self.providers else "dev")

    def _session(self, graph: str):  # noqa: ANN202 - onnxruntime.InferenceSession
        if graph not in self._sessions:
            options = self._ort.SessionOptions()
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._sessions[graph] = self._ort.InferenceSession(
                str(self.manifest.graph_file(graph)), sess_options=options, providers=self.providers
            )
        return self._sessions[graph]

    def _infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(graph)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def deactivate(self) -> None:
        self._sessions.clear()
