"""Running TensorRT engines: a thin layer over TensorRT's documented runtime API.

Only these calls are used (TensorRT 10.x and 11): ``Runtime.deserialize_cuda_engine``,
``create_execution_context``, ``set_input_shape``/``set_tensor_address``, the I/O tensor queries
and ``execute_async_v3``. Engines are built by :mod:`moce.engines.tensorrt`.

Everything here that needs a GPU is unverified on this project's machines (no GPU with TensorRT);
the logic around it is tested against ``tests/engines/fake_tensorrt.py``, a test double of exactly
these calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moce.errors import MissingDependencyError, PackageError
from moce.package.manifest import WHOLE_GRAPHS, Manifest
from moce.runtime.runners import TorchTensors

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
    ),
    "Logger": ("WARNING",),
    "NetworkDefinitionCreationFlag": ("STRONGLY_TYPED",),
    "MemoryPoolType": ("WORKSPACE",),
    "TensorIOMode": ("OUTPUT",),
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
    "ICudaEngine": ("create_execution_context", "num_io_tensors", "get_tensor_name", "get_tensor_mode"),
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


class TensorRTRunner(TorchTensors):
    """Runs the split plan's engines on one CUDA stream with torch tensors as device buffers.

    Tensors stay on the GPU between plan steps; only the router logits (a few floats per
    sample) and the final image come back to the host. Unverified here: no GPU in CI.
    """

    name = "tensorrt"

    def __init__(self, manifest: Manifest, precision: str = "fp32") -> None:
        super().__init__()
        self.manifest, self.precision = manifest, precision
        self._contexts: dict[str, Any] = {}

    def activate(self) -> None:
        import torch

        self._torch = torch
        self.device = torch.device("cuda")
        self.trt = import_tensorrt()
        self.files = check_engines(self.manifest, self.precision, self.trt.__version__, gpu_identity())
        self._runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self._stream = torch.cuda.Stream()
        self._engines: dict[str, Any] = {}

    def _context(self, graph: str) -> Any:
        if graph not in self._contexts:
            engine = self._runtime.deserialize_cuda_engine(self.files[graph].read_bytes())
            self._engines[graph] = engine
            self._contexts[graph] = engine.create_execution_context()
        return self._contexts[graph]

    def _infer(self, graph: str, feeds: dict) -> dict:
        torch = self._torch
        context = self._context(graph)
        engine = self._engines[graph]
        inputs = {name: value.contiguous() for name, value in feeds.items()}  # kept alive until the sync
        for name, tensor in inputs.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == self.trt.TensorIOMode.OUTPUT:
                shape = tuple(context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
                context.set_tensor_address(name, outputs[name].data_ptr())
        if not context.execute_async_v3(self._stream.cuda_stream):
            raise PackageError(f"TensorRT execution of {graph} failed")
        self._stream.synchronize()
        return outputs

    def deactivate(self) -> None:
        self._contexts.clear()
        self._engines = {}
