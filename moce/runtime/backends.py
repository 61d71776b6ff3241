"""Choosing a model package and a backend runner for it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from moce import __version__
from moce.errors import MoceError, PackageError
from moce.export.manifest import MANIFEST, Manifest, load_manifest
from moce.runtime.runners import GraphRunner, OnnxRuntimeRunner, TorchRunner

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
DATA = Path(__file__).parents[1] / "data"
DEFAULT_MODEL = DATA / "moce_demo.ckpt" if (DATA / "moce_demo.ckpt").is_file() else DATA / "moceir_tiny.ckpt"
"""The trained demo model shipped with moce (see docs/MODEL_CARD.md); the golden tiny one before it exists."""


def cache_dir() -> Path:
    return Path(os.environ.get("MOCE_CACHE", Path.home() / ".cache" / "moce"))


def resolve_package(model: str | Path | None, progress=None) -> Manifest:  # noqa: ANN001 - progress callback
    """A package folder as is; a checkpoint exported once into the cache (keyed by its SHA-256,
    moce's version and the exporter's source, so an upgrade, or a changed development checkout,
    re-exports with the new exporter's graphs)."""
    path = Path(model) if model else DEFAULT_MODEL
    if path.is_dir():
        manifest = load_manifest(path)
    elif path.is_file():
        manifest = _cached_export(path, progress)
    else:
        raise PackageError(f"{path}: no such model package or checkpoint")
    manifest.verify_files()
    return manifest


GRAPH_LIBRARIES = ("torch", "onnx", "onnxslim")
"""Libraries whose versions change what an export writes (the tracer, the proto, the simplifier)."""


@lru_cache(maxsize=1)
def exporter_fingerprint() -> str:
    """SHA-256 of what decides an exported graph, 12 hex digits: the model and exporter sources
    (plus ``moce/routing.py``) and the versions of :data:`GRAPH_LIBRARIES`.

    Development builds share a version number, and a library upgrade keeps it; this tells their
    exports apart.
    """
    package = Path(__file__).parents[1]
    digest = hashlib.sha256()
    sources = [*(package / "model").glob("*.py"), *(package / "export").glob("*.py"), package / "routing.py"]
    for source in sorted(sources):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    for library in GRAPH_LIBRARIES:
        digest.update(f"{library}=={_installed_version(library)}".encode())
    return digest.hexdigest()[:12]


def _installed_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "absent"


def _cached_export(checkpoint: Path, progress) -> Manifest:  # noqa: ANN001
    from moce.export.exporter import ExportOptions, export_package
    from moce.model.checkpoint import file_sha256

    target = cache_dir() / "packages" / f"{checkpoint.stem}-{file_sha256(checkpoint)[:16]}-{__version__}-{exporter_fingerprint()}.moce"
    if (target / MANIFEST).is_file():
        return load_manifest(target)
    if progress:
        progress(f"exporting {checkpoint} into the cache at {target}")
    options = ExportOptions(sizes=((64, 64),), batches=(1,), overwrite=True)
    return export_package(checkpoint, target, options).manifest


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def ort_providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available else ["CPUExecutionProvider"]


@dataclass
class BackendChoice:
    runner: GraphRunner
    name: str
    reason: str


def make_runner(backend: str, manifest: Manifest, device: str | None = None, threads: int | None = None,
                precision: str = "fp32") -> BackendChoice:
    """Build the runner for ``backend``; ``auto`` takes the fastest one that is available here."""
    if backend not in BACKENDS:
        raise MoceError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if precision not in ("fp32", "fp16", "int8"):
        raise MoceError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    if backend == "auto":
        return _auto(manifest, device, threads, precision)
    if backend == "tensorrt":
        from moce.engines.tensorrt import TensorRTRunner, import_tensorrt

        import_tensorrt()
        return BackendChoice(TensorRTRunner(manifest, precision), "tensorrt", "requested")
    if backend == "torch":
        if precision != "fp32":
            raise MoceError("the torch backend is the float32 reference; use onnxruntime or tensorrt for fp16/int8")
        return BackendChoice(_torch_runner(manifest, device), "torch", "requested")
    providers = ort_providers() if device != "cpu" else ["CPUExecutionProvider"]
    return BackendChoice(OnnxRuntimeRunner(manifest, providers, threads, precision), "onnxruntime",
                         f"requested ({providers[0]})")


def _tensorrt_ready(manifest: Manifest, precision: str) -> bool:
    """TensorRT importable, a GPU visible and engines of this precision recorded in the package."""
    from moce.engines.tensorrt import read_engines

    if not any(e["precision"] == precision for e in read_engines(manifest.root)["engines"]):
        return False
    try:
        import tensorrt  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return cuda_available()


def _auto(manifest: Manifest, device: str | None, threads: int | None, precision: str) -> BackendChoice:
    if device != "cpu" and _tensorrt_ready(manifest, precision):
        from moce.engines.tensorrt import TensorRTRunner

        return BackendChoice(TensorRTRunner(manifest, precision), "tensorrt", "auto: TensorRT engines and a GPU found")
    providers = ort_providers()
    if "CUDAExecutionProvider" in providers and device != "cpu":
        return BackendChoice(OnnxRuntimeRunner(manifest, providers, threads, precision), "onnxruntime",
                             "auto: CUDA execution provider available (no TensorRT engines)")
    if cuda_available() and device != "cpu" and precision == "fp32":
        return BackendChoice(_torch_runner(manifest, "cuda"), "torch", "auto: CUDA GPU via PyTorch, no CUDA onnxruntime")
    return BackendChoice(OnnxRuntimeRunner(manifest, ["CPUExecutionProvider"], threads, precision), "onnxruntime",
                         "auto: no GPU; ONNX Runtime CPU (see `moce bench`)")


def _torch_runner(manifest: Manifest, device: str | None) -> TorchRunner:
    from moce.model.checkpoint import load_model

    model, _ = load_model(manifest.weights_file, top_k=manifest.top_k)
    return TorchRunner(model, device)
