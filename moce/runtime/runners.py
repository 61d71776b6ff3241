"""Backends as runners with one small interface (after Polygraphy's ``BaseRunner``).

A runner loads graphs of a model package by name and runs them on named NumPy arrays; it knows
nothing about routing, which the executor does.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import TracebackType

import numpy as np

from moce._lazy import require
from moce.errors import PackageError
from moce.model.plan import AdapterStep, SegmentStep
from moce.names import (
    CONDITIONAL_GRAPH,
    DENSE_GRAPH,
    EXPERT_INPUTS,
    EXPERT_OUTPUT,
    IMAGE,
    expert_graph,
    segment_graph,
    tile_segment_graph,
)
from moce.package.manifest import Manifest
from moce.runtime.cuda_graphs import Capture, GraphCache, bucket_rows, capture_conditional, capture_cuda
from moce.runtime.device_routing import Branches, HostBranches, conditional_nodes_missing, routed_forward
from moce.runtime.ort_layout import enter_blocked_layout, fold_reorder_transposes

# Config entries of every ONNX Runtime session. The split plan runs dozens of sessions one after
# another: a pool spins between parallel sections only while its own run lasts, then stops, so it
# never spins on the cores while another session works (MoCE-IR-S, 2 cores: 4% faster at 256 px
# and 1.5% at 512 px than no spinning at all; measured alternatives in docs/performance.md).
ORT_SESSION_CONFIG: Mapping[str, str] = {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}


ORT_HINT = "onnxruntime (or onnxruntime-gpu in its place, for CUDA)"
"""What to install when ``onnxruntime`` is missing (it comes with moce; see the README's "Installing")."""


class GraphRunner(ABC):
    """``activate`` / ``infer`` / ``deactivate``, usable as a context manager."""

    name = "runner"
    batched_whole_graphs: frozenset[str] = frozenset({DENSE_GRAPH})
    """Whole-network graphs this runner runs on a batch at once; the others take one image a call
    (the package's ``If`` graphs have batch 1)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # (graph, batch) of every inference, for reports and tests

    def activate(self) -> None:
        """Acquire resources (sessions, engines); graphs may still load lazily on first use."""

    def deactivate(self) -> None:
        """Release every resource taken by ``activate`` or ``infer``."""

    def load(self, graphs: Iterable[str]) -> None:
        """Load ``graphs`` now rather than on first use, so that their start-up is set-up time and
        not the first image's. Runners that load everything in ``activate`` have nothing to do."""

    @abstractmethod
    def _infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(feeds.values())).shape[0] if feeds else 0
        self.calls.append((graph, batch))
        return self._infer(graph, feeds)

    # Array operations the executor needs between graphs. NumPy here; device runners keep
    # tensors on the device and only bring router logits and the final output to the host.
    def to_host(self, value) -> np.ndarray:  # noqa: ANN001 - a runner's array type
        return np.asarray(value)

    def from_host(self, value: np.ndarray):  # noqa: ANN201
        return value

    def take(self, value, rows: np.ndarray):  # noqa: ANN001, ANN201
        return value[rows]

    def zeros_like(self, value):  # noqa: ANN001, ANN201
        return np.zeros_like(value)

    def add_rows(self, out, rows: np.ndarray, value):  # noqa: ANN001, ANN201
        out[rows] += value
        return out

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

    def __init__(
        self,
        manifest: Manifest,
        providers: list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        session_config: Mapping[str, str] | None = None,
        profile_dir: str | os.PathLike[str] | None = None,
        layout_passes: bool = True,
    ) -> None:
        super().__init__()
        self.layout_passes = layout_passes  # on the CPU: the passes of moce.runtime.ort_layout
        self.profile_dir = profile_dir  # ONNX Runtime's profiler: one JSON trace per graph, see end_profiling
        self.manifest = manifest
        self.session_config = {**ORT_SESSION_CONFIG, **(session_config or {})}
        self.precision = precision
        manifest.graphs(precision)  # fail early when the package lacks this precision
        self.providers = providers or ["CPUExecutionProvider"]
        self.variant = manifest.variant_for(precision, cpu=self.providers[0] == "CPUExecutionProvider")
        self.threads = threads or default_threads()
        self._sessions: dict[str, object] = {}

    def activate(self) -> None:
        self._ort = require("onnxruntime", ORT_HINT)

    _arena_registered = False

    def load(self, graphs: Iterable[str]) -> None:
        for graph in graphs:
            self._session(graph)

    def _shared_arena(self) -> bool:
        """One CPU arena for all sessions: the split plan has dozens, whose own arenas would
        each keep their peak buffers (measured: 5.3 GB instead of 1.5 GB for MoCE-IR-S at 512 px)."""
        if "CPUExecutionProvider" != self.providers[0]:
            return False
        if not OnnxRuntimeRunner._arena_registered:
            ort = self._ort
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            OnnxRuntimeRunner._arena_registered = True
        return True

    def _options(self, graph: str, optimise: bool = True):  # noqa: ANN202 - onnxruntime.SessionOptions
        options = self._ort.SessionOptions()
        level = self._ort.GraphOptimizationLevel
        options.graph_optimization_level = level.ORT_ENABLE_ALL if optimise else level.ORT_DISABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, value)
        if self._shared_arena():
            options.add_session_config_entry("session.use_env_allocators", "1")
        return options

    def _session(self, graph: str):  # noqa: ANN202 - onnxruntime.InferenceSession
        if graph not in self._sessions:
            path = str(self.manifest.graph_file(graph, self.variant))
            if self.layout_passes and self.providers[0] == "CPUExecutionProvider":
                self._sessions[graph] = self._laid_out_session(graph, path)
            else:
                self._sessions[graph] = self._new_session(path, self._profiled(self._options(graph), graph))
        return self._sessions[graph]

    def _new_session(self, source: str | bytes, options):  # noqa: ANN001, ANN202
        return self._ort.InferenceSession(source, sess_options=options, providers=self.providers)

    def _profiled(self, options, graph: str):  # noqa: ANN001, ANN202
        if self.profile_dir is not None:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(self.profile_dir, graph)
        return options

    def _laid_out_session(self, graph: str, path: str):  # noqa: ANN202
        """The graph through :mod:`moce.runtime.ort_layout`'s two passes around ONNX Runtime's
        optimiser for this CPU; the result runs without a second optimisation. With nothing to
        change, the first session is the one kept."""
        onnx = require("onnx", "onnx")
        source = onnx.load(path)
        entered = enter_blocked_layout(source)
        with tempfile.TemporaryDirectory(prefix="moce-ort-") as tmp:
            options = self._options(graph)
            options.optimized_model_filepath = os.path.join(tmp, "optimised.onnx")
            first = self._new_session(source.SerializeToString() if entered else path, options)
            model = onnx.load(options.optimized_model_filepath)
        if not fold_reorder_transposes(model) and self.profile_dir is None:
            return first
        as_optimised = self._profiled(self._options(graph, optimise=False), graph)
        return self._new_session(model.SerializeToString(), as_optimised)

    def _infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(graph)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def end_profiling(self) -> dict[str, str]:
        """Close the profiler of every session made so far: graph name -> its trace file."""
        if self.profile_dir is None:
            return {}
        return {graph: session.end_profiling() for graph, session in self._sessions.items()}

    def deactivate(self) -> None:
        self._sessions.clear()


class TorchTensors(GraphRunner):
    """Array operations on torch tensors, so device runners keep data on their device."""

    device = None

    def _torch_module(self):  # noqa: ANN202
        import torch

        return torch

    def to_host(self, value) -> np.ndarray:  # noqa: ANN001
        torch = self._torch_module()
        return value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

    def from_host(self, value: np.ndarray):  # noqa: ANN201
        torch = self._torch_module()
        with torch.inference_mode():
            return torch.from_numpy(np.ascontiguousarray(value)).to(self.device)

    def take(self, value, rows: np.ndarray):  # noqa: ANN001, ANN201
        torch = self._torch_module()
        with torch.inference_mode():
            return value[torch.as_tensor(rows, device=value.device)]

    def zeros_like(self, value):  # noqa: ANN001, ANN201
        torch = self._torch_module()
        with torch.inference_mode():
            return torch.zeros_like(value)

    def add_rows(self, out, rows: np.ndarray, value):  # noqa: ANN001, ANN201
        torch = self._torch_module()
        with torch.inference_mode():
            return out.index_add_(0, torch.as_tensor(rows, device=out.device), value)


class TorchRunner(TorchTensors):
    """The PyTorch reference as a runner: each graph name of the package is bound to the model's
    segment, tile segment or expert it was exported from, and ``conditional`` to the whole routed
    forward with the expert choice made on the device (:mod:`moce.runtime.device_routing`)."""

    name = "torch"
    batched_whole_graphs = frozenset({CONDITIONAL_GRAPH})  # the routed forward masks rows per expert

    def __init__(self, model, device: str | None = None, channels_last: bool | None = None) -> None:  # noqa: ANN001
        """``model``: a moce.model.MoCEIR; ``channels_last`` (default: on CUDA) keeps weights and image
        batches in NHWC memory, the layout GPU convolution kernels run fastest on."""
        super().__init__()
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self._format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self._format).eval()
        self.dtype = model.patch_embed.proj.weight.dtype  # float32, or the half of moce.model.half.half_form
        self._tiles = None  # moce.model.global_stats.TileSegments, made on first use
        self._graph_cache: GraphCache | None = None  # see use_cuda_graphs
        self._capture_branches: Capture | None = None  # the conditional forward as one graph with IF nodes
        self._no_branches: str | None = None  # why not, still to be said
        self._experts: set[str] = set()
        self._captured: set[str] = set()  # what CUDA graphs may run: segments and experts, not tile segments
        self._graphs: dict[str, Callable[[dict], dict]] = {}
        for step in self.model.plan:
            if isinstance(step, SegmentStep):
                self._graphs[segment_graph(step.index)] = partial(self.model.run_segment, step.index)
                self._captured.add(segment_graph(step.index))
                self._graphs[tile_segment_graph(step.index)] = partial(self._tile_segment, step.index)
            else:
                assert isinstance(step, AdapterStep)
                for e in range(self.model.config.num_experts):
                    self._graphs[expert_graph(step.index, e)] = partial(self._expert, step.index, e)
                    self._experts.add(expert_graph(step.index, e))
        self._captured |= self._experts
        self._graphs[CONDITIONAL_GRAPH] = self._run_conditional

    def compile(self, backend: str = "inductor", mode: str | None = None) -> None:
        """Run every trunk segment and expert through ``torch.compile`` whole (``fullgraph=True``: a
        graph break is an error, not a silent fallback), one compiled graph per input shape. Tile
        segments and the conditional forward stay eager. The first call of each shape compiles
        (inductor: minutes for a whole model on two cores); later calls of that shape reuse it.

        The segments share one Python function and the experts another, and Dynamo limits the
        compilations of one function (8 by default): the limit is raised to a shape's worth of
        graphs for each of 8 shapes, for this process."""
        import torch

        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, 8 * len(self._captured))
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 8 * len(self._captured))
        for name in self._captured:
            self._graphs[name] = torch.compile(
                self._graphs[name], fullgraph=True, dynamic=False, backend=backend, mode=mode
            )

    def use_cuda_graphs(self, capture: Capture | None = None, capture_branches: Capture | None = None) -> None:
        """Replay segments and experts from CUDA graphs captured per input shape (tile segments run
        as they are), and the conditional forward as one graph whose experts are IF nodes.

        ``capture`` and ``capture_branches`` stand in for :func:`moce.runtime.cuda_graphs.capture_cuda`
        and :func:`~moce.runtime.cuda_graphs.capture_conditional` in tests. Without IF nodes in this
        PyTorch, the conditional forward says so and lets the host choose the experts.
        """
        self._graph_cache = GraphCache(capture or capture_cuda)
        self._capture_branches = capture_branches
        if capture_branches is None:
            self._no_branches = conditional_nodes_missing()
            self._capture_branches = None if self._no_branches else capture_conditional

    def _conditional(self, feeds: dict, branches: Branches | None = None) -> dict:
        return routed_forward(self.model, feeds[IMAGE], branches or HostBranches())

    def _run_conditional(self, feeds: dict) -> dict:
        """The routed forward: one captured graph with IF nodes when CUDA graphs are on and this
        PyTorch has them; else eager, the host reading each adapter's choice (said once)."""
        if self._graph_cache is not None and self._capture_branches is not None:
            return self._graph_cache.run(CONDITIONAL_GRAPH, self._conditional, feeds, self._capture_branches)
        if self._graph_cache is not None and self._no_branches:
            warnings.warn(
                f"--routing conditional is not captured as one CUDA graph ({self._no_branches}); "
                "the host chooses its experts, one wait per adapter",
                stacklevel=3,
            )
            self._no_branches = None
        return self._conditional(feeds)

    def _tile_segment(self, index: int, feeds: dict) -> dict:
        from moce.model.global_stats import TileSegments  # PyTorch only for this backend

        if self._tiles is None:
            self._tiles = TileSegments(self.model)
        return self._tiles.run(index, feeds)

    def _expert(self, adapter: int, expert: int, feeds: dict) -> dict:
        x, shared, gate = (feeds[n] for n in EXPERT_INPUTS)
        return {EXPERT_OUTPUT: self.model.adapter(adapter).expert(expert)(x, shared) * gate.reshape(-1, 1, 1, 1)}

    def from_host(self, value: np.ndarray):  # noqa: ANN201
        tensor = super().from_host(value).to(self.dtype)
        return tensor.contiguous(memory_format=self._format) if tensor.ndim == 4 else tensor

    def _infer(self, graph: str, feeds: dict) -> dict:
        if graph not in self._graphs:
            raise PackageError(f"the torch backend runs the split plan and the conditional forward, not '{graph}'")
        with self._torch_module().inference_mode():
            if self._graph_cache is None or graph not in self._captured:
                return self._graphs[graph](feeds)
            if graph not in self._experts:
                return self._graph_cache.run(graph, self._graphs[graph], feeds)
            rows = next(iter(feeds.values())).shape[0]
            pad = [0] * (bucket_rows(rows) - rows)  # extra rows repeat the first; their outputs are dropped
            padded = {name: value[list(range(rows)) + pad] if pad else value for name, value in feeds.items()}
            out = self._graph_cache.run(graph, self._graphs[graph], padded)
            return {name: value[:rows] for name, value in out.items()}
