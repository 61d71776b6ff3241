"""Choosing a model package and a backend runner for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moce._lazy import require
from moce.errors import InputError, MissingDependencyError, MoceError
from moce.names import CONDITIONAL_GRAPH, DENSE_GRAPH, GRAPH_PRECISIONS, PRECISIONS
from moce.package.manifest import Manifest
from moce.runtime.ort_loader import ORT_HINT
from moce.runtime.runners import GraphRunner, OnnxRuntimeRunner, TorchRunner
from moce.runtime.tensorrt_runner import TensorRTRunner, import_tensorrt


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver shows a GPU, asked without importing PyTorch."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def cpu_bf16_units() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512_BF16 or AMX) for PyTorch; without them bf16
    is emulated, slower than float32. PyTorch exposes the check only under private names."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def cuda_available() -> bool:
    """A CUDA device usable from PyTorch (PyTorch is imported only when the driver shows a GPU)."""
    if not nvidia_gpu_present():
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def ort_providers() -> list[str]:
    available = require("onnxruntime", ORT_HINT).get_available_providers()
    return (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available
        else ["CPUExecutionProvider"]
    )


@dataclass
class BackendChoice:
    runner: GraphRunner
    name: str
    reason: str


@dataclass(frozen=True)
class Backend:
    """One row of :data:`BACKENDS`: how to make the runner, and when ``auto`` picks it."""

    name: str
    precisions: tuple[str, ...]
    make: Callable[[Manifest, str | None, int | None, str], tuple[GraphRunner, str]]
    """(manifest, device, threads, precision) -> (runner, what it runs on)"""
    auto: Callable[[Manifest, str | None, str], str | None]
    """(manifest, device, precision) -> why ``auto`` takes it here, or None to pass it over"""
    precision_hint: str = ""
    routings: tuple[str, ...] = ("split", CONDITIONAL_GRAPH, DENSE_GRAPH)
    """The routing forms it runs: the split plan, and the whole-network graphs it has a way to run"""
    whole_from_package: bool = True
    """Whether its whole-network forms run the package's graphs (the torch backend runs the model)"""


def _make_tensorrt(
    manifest: Manifest, device: str | None, threads: int | None, precision: str
) -> tuple[GraphRunner, str]:
    import_tensorrt()
    return TensorRTRunner(manifest, precision), "CUDA"


def _auto_tensorrt(manifest: Manifest, device: str | None, precision: str) -> str | None:
    """TensorRT importable, a GPU visible and engines of this precision recorded in the package."""
    if device == "cpu" or not manifest.engines_of(precision):
        return None
    try:
        import_tensorrt()
    except MissingDependencyError:
        return None
    return "TensorRT engines and a GPU found" if cuda_available() else None


def _make_onnxruntime(
    manifest: Manifest, device: str | None, threads: int | None, precision: str
) -> tuple[GraphRunner, str]:
    providers = ort_providers() if device != "cpu" else ["CPUExecutionProvider"]
    return OnnxRuntimeRunner(manifest, providers, threads, precision), providers[0]


def _auto_onnxruntime(manifest: Manifest, device: str | None, precision: str) -> str | None:
    if device != "cpu" and "CUDAExecutionProvider" in ort_providers():
        return "CUDA execution provider available (no TensorRT engines)"
    return None


def _make_torch(manifest: Manifest, device: str | None, threads: int | None, precision: str) -> tuple[GraphRunner, str]:
    from moce.model.checkpoint import load_model  # PyTorch only for this backend
    from moce.model.half import half_form

    model, _ = load_model(manifest.weights_file, top_k=manifest.top_k)
    return TorchRunner(
        model if precision == "fp32" else half_form(model, precision), device
    ), device or "default device"


def _auto_torch(manifest: Manifest, device: str | None, precision: str) -> str | None:
    if device != "cpu" and precision != "int8" and cuda_available():
        return "CUDA GPU via PyTorch, no CUDA onnxruntime"
    return None


BACKENDS: dict[str, Backend] = {  # in the order ``auto`` tries them
    "tensorrt": Backend("tensorrt", GRAPH_PRECISIONS, _make_tensorrt, _auto_tensorrt, routings=("split",)),
    "onnxruntime": Backend("onnxruntime", GRAPH_PRECISIONS, _make_onnxruntime, _auto_onnxruntime),
    "torch": Backend(
        "torch",
        ("fp32", "fp16", "bf16"),
        _make_torch,
        _auto_torch,
        "the torch backend runs fp32, fp16 and bf16 (float32 islands); int8 needs onnxruntime or tensorrt",
        ("split", CONDITIONAL_GRAPH),  # conditional: the choice made on the device (moce.runtime.device_routing)
        whole_from_package=False,
    ),
}
BACKEND_NAMES = ("auto", *BACKENDS)
FALLBACK = "onnxruntime"
"""What ``auto`` runs when no accelerated backend is usable: ONNX Runtime on the CPU."""


def make_runner(
    backend: str,
    manifest: Manifest,
    device: str | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    cuda_graphs: bool = False,
    routing: str = "split",
    compile: bool = False,
) -> BackendChoice:
    """Build the runner for ``backend``; ``auto`` takes the first row of :data:`BACKENDS` usable here
    that runs the ``routing`` form. A named backend that cannot run it is refused before it loads.

    ``cuda_graphs``: the torch backend on a CUDA device replays CUDA graphs (moce.runtime.cuda_graphs).
    ``compile``: the torch backend runs each segment and expert through ``torch.compile`` (inductor).
    """
    choice = _make_runner(backend, manifest, device, threads, precision, routing)
    if cuda_graphs:
        if not isinstance(choice.runner, TorchRunner) or choice.runner.device.type != "cuda":
            raise MoceError("--cuda-graphs needs the torch backend on a CUDA device (--backend torch --device cuda)")
        choice.runner.use_cuda_graphs()
    if compile:
        if not isinstance(choice.runner, TorchRunner):
            raise MoceError("--compile needs the torch backend (--backend torch)")
        choice.runner.compile()
    return choice


def _make_runner(
    backend: str, manifest: Manifest, device: str | None, threads: int | None, precision: str, routing: str
) -> BackendChoice:
    if backend not in BACKEND_NAMES:
        raise MoceError(f"unknown backend {backend!r}; choose from {', '.join(BACKEND_NAMES)}")
    if precision not in PRECISIONS:
        raise MoceError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")
    if backend == "auto":
        for row in BACKENDS.values():
            reason = row.auto(manifest, device, precision) if routing in row.routings else None
            if reason:
                return BackendChoice(row.make(manifest, device, threads, precision)[0], row.name, f"auto: {reason}")
        if precision not in BACKENDS[FALLBACK].precisions:
            raise MoceError(f"--precision {precision} runs on the torch backend only; pass --backend torch")
        runner, _ = BACKENDS[FALLBACK].make(manifest, "cpu", threads, precision)
        return BackendChoice(runner, FALLBACK, "auto: no GPU; ONNX Runtime CPU (see `moce bench`)")
    row = BACKENDS[backend]
    if routing not in row.routings:
        raise InputError(f"--routing {routing}: the {backend} backend runs {' or '.join(row.routings)} routing")
    if precision not in row.precisions:
        raise MoceError(
            row.precision_hint or f"the {backend} backend runs {', '.join(row.precisions)}, not {precision}"
        )
    runner, where = row.make(manifest, device, threads, precision)
    return BackendChoice(runner, backend, "requested" if backend != FALLBACK else f"requested ({where})")
