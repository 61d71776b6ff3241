"""Running TensorRT engines: a thin layer over TensorRT's documented runtime API.

Only the calls listed in :data:`TENSORRT_API` are used (TensorRT 10.x and 11), here and in the
builder (:mod:`moce.engines.tensorrt_builder`); a test checks them against the real bindings.

Everything here that needs a GPU is unverified on this project's machines (no GPU with TensorRT);
the logic around it is tested against ``tests/engines/fake_tensorrt.py``, a test double of exactly
these calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moce.errors import MissingDependencyError, PackageError
from moce.names import WHOLE_GRAPHS
from moce.package.manifest import Manifest
from moce.runtime.runners import GraphRunner, TorchArrays, manifest_inputs

TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32"}
TORCH_DTYPES |= {"INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}
"""TensorRT ``DataType`` member -> torch dtype name, for output buffers of the engine's own types."""


TENSORRT_API: dict[str, tuple[str, ...]] = {
    "tensorrt": (
        "__version__",
        "Logger",
        "Builder",
        "NetworkDefinitionCreationFlag",
        "OnnxParser",
        "MemoryPoolType",
        "Runtime",
        "TensorIOMode",
        "DataType",
    ),
    "Logger": ("WARNING",),
    "NetworkDefinitionCreationFlag": ("STRONGLY_TYPED",),
    "MemoryPoolType": ("WORKSPACE",),
    "TensorIOMode": ("OUTPUT",),
    "DataType": tuple(TORCH_DTYPES),
    "Builder": ("create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"),
    "INetworkDefinition": (),
    "OnnxParser": ("parse_from_file", "num_errors", "get_error"),
    "IBuilderConfig": (
        "set_memory_pool_limit",
        "create_timing_cache",
        "set_timing_cache",
        "get_timing_cache",
        "add_optimization_profile",
    ),
    "ITimingCache": ("serialize",),
    "IOptimizationProfile": ("set_shape",),
    "Runtime": ("deserialize_cuda_engine",),
    "ICudaEngine": (
        "create_execution_context",
        "num_io_tensors",
        "get_tensor_name",
        "get_tensor_mode",
        "get_tensor_dtype",
    ),
    "IExecutionContext": ("set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3"),
}
"""Every TensorRT class and member moce's builder and runner use (class -> members; "tensorrt" is the
module). tests/engines/test_tensorrt_api.py checks each against the real bindings of TensorRT 10.x
and 11.x, and that the test double defines nothing else."""

TRT_HINT = "pip install 'moce[trt]' (TensorRT from NVIDIA's index) on a machine with an NVIDIA GPU"


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a :class:`MissingDependencyError` naming the extra."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise MissingDependencyError(f"TensorRT is not installed ({exc}); {TRT_HINT}") from None
    return tensorrt


def gpu_identity() -> tuple[str, str]:
    """``(name, compute capability)`` of the current CUDA device, via PyTorch."""
    import torch

    if not torch.cuda.is_available():
        raise MissingDependencyError(f"no CUDA GPU is visible; TensorRT engines need one ({TRT_HINT})")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


def engine_graphs(manifest: Manifest, precision: str) -> list[str]:
    """The graphs that get a TensorRT engine: all of ``precision`` but the whole-network ones."""
    return [n for n in manifest.graphs(precision) if n not in WHOLE_GRAPHS]


def check_engines(manifest: Manifest, precision: str, trt_version: str, gpu: tuple[str, str]) -> dict[str, Path]:
    """Engine files for ``precision``; refuses stale ones with the command that rebuilds them."""
    engines = manifest.engines_of(precision)
    rebuild = (
        f"rebuild with: moce build-engine {manifest.root} --{precision}"
        if precision != "fp32"
        else f"rebuild with: moce build-engine {manifest.root}"
    )
    needed = engine_graphs(manifest, precision)
    missing = [n for n in needed if n not in engines]
    if missing:
        raise PackageError(f"{manifest.root}: no {precision} TensorRT engine for {missing[0]}; {rebuild}")
    out = {}
    for name in needed:
        engine = engines[name]
        reasons = []
        if engine.graph_sha256 != manifest.graphs(precision)[name].sha256:
            reasons.append("its ONNX graph changed")
        if engine.trt_version != trt_version:
            reasons.append(f"it was built with TensorRT {engine.trt_version}, this is {trt_version}")
        if (engine.gpu_name, engine.compute_capability) != gpu:
            reasons.append(
                f"it was built for {engine.gpu_name} (sm {engine.compute_capability}), this is {gpu[0]} (sm {gpu[1]})"
            )
        if reasons:
            raise PackageError(f"{manifest.root}: stale TensorRT engine for {name}: {'; '.join(reasons)}; {rebuild}")
        out[name] = manifest.root / engine.file
    return out


class CudaStream:
    """The CUDA work of the TensorRT runner, all on one stream of its own (PyTorch's CUDA API).

    Uploads, row gathers, scatters and engine launches are enqueued on this stream, so they run in
    order without the host waiting. The host waits only in :meth:`download` (router logits, and the
    final image): one pinned, asynchronous copy and one event per call, counted in ``syncs``.
    """

    def __init__(self, torch: Any) -> None:
        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.syncs = 0

    @property
    def handle(self) -> int:
        return int(self.stream.cuda_stream)

    def scope(self) -> Any:
        """A context in which PyTorch enqueues (and allocates for) this stream."""
        return self.torch.cuda.stream(self.stream)

    def wait_for_caller(self) -> None:
        """Make this stream wait for what the caller's stream has enqueued (tensors it made and passed in)."""
        self.stream.wait_stream(self.torch.cuda.current_stream())

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, device="cuda")

    def upload(self, array: np.ndarray) -> Any:
        with self.scope():
            return self.torch.from_numpy(np.ascontiguousarray(array)).pin_memory().to("cuda", non_blocking=True)

    def download(self, tensor: Any) -> np.ndarray:
        with self.scope():
            if tensor.dtype == self.torch.bfloat16:  # NumPy has no bfloat16
                tensor = tensor.float()
            pinned = self.torch.empty(tuple(tensor.shape), dtype=tensor.dtype, pin_memory=True)
            pinned.copy_(tensor, non_blocking=True)
            done = self.torch.cuda.Event()
            done.record(self.stream)
        done.synchronize()
        self.syncs += 1
        return pinned.numpy()


class StreamArrays(TorchArrays):
    """:class:`TorchArrays` whose transfers and row operations run on the runner's CUDA stream."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream

    def from_host(self, value: np.ndarray) -> Any:
        return self.stream.upload(value)

    def to_host(self, value: Any) -> np.ndarray:
        return self.stream.download(value).astype(np.float32, copy=False)

    def take(self, value: Any, rows: np.ndarray) -> Any:
        with self.stream.scope():
            return super().take(value, rows)

    def zeros_like(self, value: Any) -> Any:
        with self.stream.scope():
            return super().zeros_like(value)

    def add_rows(self, out: Any, rows: np.ndarray, value: Any) -> Any:
        with self.stream.scope():
            return super().add_rows(out, rows, value)


class TensorRTRunner(GraphRunner):
    """Runs the split plan's engines on one CUDA stream (:class:`CudaStream`), torch tensors as buffers.

    Tensors stay on the GPU between plan steps and no engine launch waits for the host: the host
    waits once per adapter (its router logits) and once for the final image. Output buffers take
    the dtypes the engine declares; the caller's feeds are never changed. Unverified on a GPU here;
    tested against the double in tests/engines/fake_tensorrt.py with a CPU stand-in stream.

    ``trt`` (the ``tensorrt`` module), ``stream`` and ``gpu`` (name, compute capability) are
    injected where given and found otherwise; either way the engines are checked against them.
    """

    name = "tensorrt"

    def __init__(
        self,
        manifest: Manifest,
        precision: str = "fp32",
        stream: Any = None,
        trt: Any = None,
        gpu: tuple[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.manifest, self.precision = manifest, precision
        self.stream, self.trt, self.gpu = stream, trt, gpu
        self._contexts: dict[str, Any] = {}
        self._engines: dict[str, Any] = {}

    def activate_impl(self) -> None:
        import torch

        self._torch = torch
        self.trt = self.trt or import_tensorrt()
        self.files = check_engines(self.manifest, self.precision, self.trt.__version__, self.gpu or gpu_identity())
        self.stream = self.stream or CudaStream(torch)
        self.arrays = StreamArrays(self.stream)
        self._runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))

    def get_input_metadata(self, graph: str) -> Any:
        return manifest_inputs(self.manifest, self.precision, graph)

    def _context(self, graph: str) -> Any:
        if graph not in self._contexts:
            engine = self._runtime.deserialize_cuda_engine(self.files[graph].read_bytes())
            self._engines[graph] = engine
            self._contexts[graph] = engine.create_execution_context()
        return self._contexts[graph]

    def _dtype(self, engine: Any, name: str) -> Any:
        kind = engine.get_tensor_dtype(name)
        member = next(m for m in TORCH_DTYPES if getattr(self.trt.DataType, m, None) == kind)
        return getattr(self._torch, TORCH_DTYPES[member])

    def infer_impl(self, graph: str, feeds: dict) -> dict:
        context = self._context(graph)
        engine = self._engines[graph]
        self.stream.wait_for_caller()
        with self.stream.scope():
            inputs = {name: value.contiguous() for name, value in feeds.items()}  # alive until launched
            for name, tensor in inputs.items():
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                if engine.get_tensor_mode(name) == self.trt.TensorIOMode.OUTPUT:
                    shape = tuple(context.get_tensor_shape(name))
                    outputs[name] = self.stream.empty(shape, self._dtype(engine, name))
                    context.set_tensor_address(name, outputs[name].data_ptr())
            if not context.execute_async_v3(self.stream.handle):
                raise PackageError(f"TensorRT execution of {graph} failed")
        return outputs

    def deactivate_impl(self) -> None:
        self._contexts.clear()
        self._engines = {}
