"""Backends as runners with one small interface (after Polygraphy's ``BaseRunner``).

A runner loads graphs of a model package by name and runs them on named NumPy arrays; it knows
nothing about routing, which the executor does.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any

import numpy as np

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
from moce.package.manifest import Manifest, TensorSpec
from moce.runtime.cuda_graphs import Capture, GraphCache, bucket_rows, capture_conditional, capture_cuda
from moce.runtime.device_routing import Branches, HostBranches, conditional_nodes_missing, routed_forward
from moce.runtime.ort_loader import OnnxRuntimeLoader


class ArrayOps:
    """The array operations the executor needs between graphs, on NumPy arrays. Device runners
    give their own (:class:`TorchArrays`), so tensors stay on the device and only router logits
    and the final image come to the host."""

    def to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def from_host(self, value: np.ndarray) -> Any:
        return value

    def take(self, value: Any, rows: np.ndarray) -> Any:
        return value[rows]

    def zeros_like(self, value: Any) -> Any:
        return np.zeros_like(value)

    def add_rows(self, out: Any, rows: np.ndarray, value: Any) -> Any:
        out[rows] += value
        return out


class GraphRunner(ABC):
    """A backend with Polygraphy's ``BaseRunner`` contract: :meth:`activate` and :meth:`deactivate`
    are templates guarded by ``is_active`` (subclasses implement ``activate_impl`` and
    ``deactivate_impl``), and :meth:`infer` refuses an inactive runner and feeds that do not match
    :meth:`get_input_metadata` before ``infer_impl`` runs. Usable as a context manager."""

    name = "runner"
    batched_whole_graphs: frozenset[str] = frozenset({DENSE_GRAPH})
    """Whole-network graphs this runner runs on a batch at once; the others take one image a call
    (the package's ``If`` graphs have batch 1)."""

    def __init__(self, arrays: ArrayOps | None = None) -> None:
        self.is_active = False
        self.arrays = arrays or ArrayOps()
        self._ranks: dict[str, dict[str, int] | None] = {}  # graph -> its inputs' ranks (None: unchecked)

    def activate(self) -> None:
        """Acquire resources (sessions, engines); graphs may still load lazily on first use. A
        second call while active does nothing."""
        if self.is_active:
            return
        self.activate_impl()
        self.is_active = True

    def deactivate(self) -> None:
        """Release every resource taken by ``activate`` or ``infer``; nothing while inactive."""
        if not self.is_active:
            return
        try:
            self.deactivate_impl()
        finally:
            self.is_active = False

    def activate_impl(self) -> None:
        """What :meth:`activate` does for this backend."""

    def deactivate_impl(self) -> None:
        """What :meth:`deactivate` does for this backend."""

    def load(self, graphs: Iterable[str]) -> None:
        """Load ``graphs`` now rather than on first use, so that their start-up is set-up time and
        not the first image's. Runners that load everything in ``activate`` have nothing to do."""

    def get_input_metadata(self, graph: str) -> Sequence[TensorSpec] | None:
        """The inputs ``graph`` takes (name, shape, dtype), from the manifest; None where the runner
        does not run the package's graphs."""
        return None

    def infer(self, graph: str, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run ``graph`` on ``feeds`` (arrays of this runner's :attr:`arrays`)."""
        if not self.is_active:
            raise PackageError(f"the {self.name} runner must be activated before it runs {graph}")
        if graph not in self._ranks:  # read once per graph, not on every call
            specs = self.get_input_metadata(graph)
            self._ranks[graph] = None if specs is None else {s.name: len(s.shape) for s in specs}
        check_feeds(graph, feeds, self._ranks[graph])
        return self.infer_impl(graph, feeds)

    @abstractmethod
    def infer_impl(self, graph: str, feeds: dict[str, Any]) -> dict[str, Any]: ...

    def __enter__(self) -> GraphRunner:
        self.activate()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.deactivate()


def manifest_inputs(manifest: Manifest, variant: str, graph: str) -> Sequence[TensorSpec] | None:
    """The input specs the manifest records for ``graph`` of ``variant``, or None for a graph it lacks."""
    graphs = manifest.graphs(variant)
    return graphs[graph].inputs if graph in graphs else None


def check_feeds(graph: str, feeds: Mapping[str, Any], ranks: Mapping[str, int] | None) -> None:
    """Refuse feeds whose names or ranks (name -> rank; None: unchecked) are not the graph's inputs
    (a plan that would hand a graph the wrong tensors fails here, naming them, not deep inside a
    backend)."""
    if ranks is None:
        return
    missing, extra = sorted(set(ranks) - set(feeds)), sorted(set(feeds) - set(ranks))
    if missing or extra:
        takes = ", ".join(ranks)
        raise PackageError(f"{graph} takes {takes}; missing {missing or 'none'}, unexpected {extra or 'none'}")
    for name, value in feeds.items():
        rank = ranks[name]
        if rank and getattr(value, "ndim", rank) != rank:
            raise PackageError(f"{graph}: input {name} has {value.ndim} dimensions, the graph takes {rank}")


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
        self.manifest = manifest
        self.precision = precision
        manifest.graphs(precision)  # fail early when the package lacks this precision
        providers = providers or ["CPUExecutionProvider"]
        self.variant = manifest.variant_for(precision, cpu=providers[0] == "CPUExecutionProvider")
        threads = threads or default_threads()
        self.loader = OnnxRuntimeLoader(providers, threads, session_config, profile_dir, layout_passes)
        self._sessions: dict[str, Any] = {}

    @property
    def providers(self) -> list[str]:
        return self.loader.providers

    @property
    def session_config(self) -> dict[str, str]:
        return self.loader.session_config

    def load(self, graphs: Iterable[str]) -> None:
        for graph in graphs:
            self._session(graph)

    def get_input_metadata(self, graph: str) -> Sequence[TensorSpec] | None:
        return manifest_inputs(self.manifest, self.variant, graph)

    def _session(self, graph: str) -> Any:
        if graph not in self._sessions:
            self._sessions[graph] = self.loader(str(self.manifest.graph_file(graph, self.variant)), graph)
        return self._sessions[graph]

    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session(graph)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def end_profiling(self) -> dict[str, str]:
        """Close the profiler of every session made so far: graph name -> its trace file."""
        if self.loader.profile_dir is None:
            return {}
        return {graph: session.end_profiling() for graph, session in self._sessions.items()}

    def deactivate_impl(self) -> None:
        self._sessions.clear()


class TorchArrays(ArrayOps):
    """:class:`ArrayOps` on torch tensors on ``device``; arrays from the host become ``dtype`` in
    ``memory_format`` where given (the layout the runner's model runs fastest in)."""

    def __init__(self, device: Any = None, dtype: Any = None, memory_format: Any = None) -> None:
        import torch

        self.torch, self.device, self.dtype, self.memory_format = torch, device, dtype, memory_format

    def to_host(self, value: Any) -> np.ndarray:
        torch = self.torch
        return value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

    def from_host(self, value: np.ndarray) -> Any:
        with self.torch.inference_mode():
            tensor = self.torch.from_numpy(np.ascontiguousarray(value)).to(self.device)
            if self.dtype is not None:
                tensor = tensor.to(self.dtype)
            if self.memory_format is not None and tensor.ndim == 4:
                tensor = tensor.contiguous(memory_format=self.memory_format)
            return tensor

    def take(self, value: Any, rows: np.ndarray) -> Any:
        with self.torch.inference_mode():
            return value[self.torch.as_tensor(rows, device=value.device)]

    def zeros_like(self, value: Any) -> Any:
        with self.torch.inference_mode():
            return self.torch.zeros_like(value)

    def add_rows(self, out: Any, rows: np.ndarray, value: Any) -> Any:
        with self.torch.inference_mode():
            return out.index_add_(0, self.torch.as_tensor(rows, device=out.device), value.to(out.dtype))


class TorchRunner(GraphRunner):
    """The PyTorch reference as a runner: each graph name of the package is bound to the model's
    segment, tile segment or expert it was exported from, and ``conditional`` to the whole routed
    forward with the expert choice made on the device (:mod:`moce.runtime.device_routing`)."""

    name = "torch"
    batched_whole_graphs = frozenset({CONDITIONAL_GRAPH})  # the routed forward masks rows per expert

    def __init__(self, model, device: str | None = None, channels_last: bool | None = None) -> None:  # noqa: ANN001
        """``model``: a moce.model.MoCEIR; ``channels_last`` (default: on CUDA) keeps weights and image
        batches in NHWC memory, the layout GPU convolution kernels run fastest on."""
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self._format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self._format).eval()
        self.dtype = model.patch_embed.proj.weight.dtype  # float32, or the half of moce.model.half.half_form
        super().__init__(TorchArrays(self.device, self.dtype, self._format))
        self._torch = torch
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

    def infer_impl(self, graph: str, feeds: dict) -> dict:
        if graph not in self._graphs:
            raise PackageError(f"the torch backend runs the split plan and the conditional forward, not '{graph}'")
        with self._torch.inference_mode():
            if self._graph_cache is None or graph not in self._captured:
                return self._graphs[graph](feeds)
            if graph not in self._experts:
                return self._graph_cache.run(graph, self._graphs[graph], feeds)
            rows = next(iter(feeds.values())).shape[0]
            pad = [0] * (bucket_rows(rows) - rows)  # extra rows repeat the first; their outputs are dropped
            padded = {name: value[list(range(rows)) + pad] if pad else value for name, value in feeds.items()}
            out = self._graph_cache.run(graph, self._graphs[graph], padded)
            return {name: value[:rows] for name, value in out.items()}
