"""Making ONNX Runtime sessions for a package's graphs, apart from running them (Polygraphy keeps
session construction in a loader too): options, one shared CPU arena, the layout passes around
ONNX Runtime's optimiser on the CPU, and the profiler."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from moce._lazy import require
from moce.runtime.ort_layout import enter_blocked_layout, fold_reorder_transposes

# Config entries of every ONNX Runtime session. The split plan runs dozens of sessions one after
# another: a pool spins between parallel sections only while its own run lasts, then stops, so it
# never spins on the cores while another session works (MoCE-IR-S, 2 cores: 4% faster at 256 px
# and 1.5% at 512 px than no spinning at all; measured alternatives in docs/performance.md).
ORT_SESSION_CONFIG: Mapping[str, str] = {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}


ORT_HINT = "onnxruntime (or onnxruntime-gpu in its place, for CUDA)"
"""What to install when ``onnxruntime`` is missing (it comes with moce; see the README's "Installing")."""


class OnnxRuntimeLoader:
    """``loader(path, graph)``: an ``onnxruntime.InferenceSession`` for the graph file at ``path``
    (``graph`` names its profiler trace), made as every moce session is made."""

    _arena_registered = False

    def __init__(
        self,
        providers: list[str],
        threads: int,
        session_config: Mapping[str, str] | None = None,
        profile_dir: str | os.PathLike[str] | None = None,
        layout_passes: bool = True,
    ) -> None:
        self.providers = providers
        self.threads = threads
        self.session_config = {**ORT_SESSION_CONFIG, **(session_config or {})}
        self.profile_dir = profile_dir  # ONNX Runtime's profiler: one JSON trace per graph
        self.layout_passes = layout_passes  # on the CPU: the passes of moce.runtime.ort_layout

    @property
    def ort(self) -> Any:
        return require("onnxruntime", ORT_HINT)

    def __call__(self, path: str, graph: str) -> Any:
        if self.layout_passes and self.providers[0] == "CPUExecutionProvider":
            return self._laid_out_session(graph, path)
        return self._new_session(path, self._profiled(self.options(), graph))

    def options(self, optimise: bool = True) -> Any:
        """The ``onnxruntime.SessionOptions`` of every session (threads, config entries, the arena)."""
        ort = self.ort
        options = ort.SessionOptions()
        level = ort.GraphOptimizationLevel
        options.graph_optimization_level = level.ORT_ENABLE_ALL if optimise else level.ORT_DISABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, value)
        if self._shared_arena():
            options.add_session_config_entry("session.use_env_allocators", "1")
        return options

    def _shared_arena(self) -> bool:
        """One CPU arena for all sessions: the split plan has dozens, whose own arenas would
        each keep their peak buffers (measured: 5.3 GB instead of 1.5 GB for MoCE-IR-S at 512 px)."""
        if "CPUExecutionProvider" != self.providers[0]:
            return False
        if not OnnxRuntimeLoader._arena_registered:
            ort = self.ort
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            OnnxRuntimeLoader._arena_registered = True
        return True

    def _new_session(self, source: str | bytes, options: Any) -> Any:
        return self.ort.InferenceSession(source, sess_options=options, providers=self.providers)

    def _profiled(self, options: Any, graph: str) -> Any:
        if self.profile_dir is not None:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(self.profile_dir, graph)
        return options

    def _laid_out_session(self, graph: str, path: str) -> Any:
        """The graph through :mod:`moce.runtime.ort_layout`'s two passes around ONNX Runtime's
        optimiser for this CPU; the result runs without a second optimisation. With nothing to
        change, the first session is the one kept."""
        onnx = require("onnx", "onnx")
        source = onnx.load(path)
        entered = enter_blocked_layout(source)
        with tempfile.TemporaryDirectory(prefix="moce-ort-") as tmp:
            options = self.options()
            options.optimized_model_filepath = os.path.join(tmp, "optimised.onnx")
            first = self._new_session(source.SerializeToString() if entered else path, options)
            model = onnx.load(options.optimized_model_filepath)
        if not fold_reorder_transposes(model) and self.profile_dir is None:
            return first
        return self._new_session(model.SerializeToString(), self._profiled(self.options(optimise=False), graph))
