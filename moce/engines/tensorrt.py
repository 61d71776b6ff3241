"""A thin layer over TensorRT's documented Python API: build, cache and run engines per graph.

Only these calls are used (TensorRT 10.x and 11): ``Builder``, ``create_network`` with the
``STRONGLY_TYPED`` flag, ``OnnxParser.parse_from_file``, ``BuilderConfig.set_memory_pool_limit``,
``create_timing_cache``/``set_timing_cache``, optimisation profiles, ``build_serialized_network``,
``Runtime.deserialize_cuda_engine``, ``set_input_shape``/``set_tensor_address`` and
``execute_async_v3``. Precision is never a builder flag: FP16 and INT8 come from the ONNX graph
(strongly typed networks), as TensorRT 11 requires.

Everything here that needs a GPU is unverified on this project's machines (no GPU, and
TensorRT cannot be installed from PyPI here); the logic around it is tested against
``tests/engines/fake_tensorrt.py``, a test double of exactly these calls.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


from moce.errors import MissingDependencyError, PackageError
from moce.export.manifest import Manifest
from moce.runtime.runners import TorchTensors

ENGINES_JSON = "engines.json"
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


@dataclass(frozen=True)
class Profile:
    """Image-level optimisation profile: (batch, height, width) for min, opt and max."""

    min: tuple[int, int, int] = (1, 64, 64)
    opt: tuple[int, int, int] = (1, 512, 512)
    max: tuple[int, int, int] = (4, 1024, 1024)

    def shape_of(self, dims: list[Any], which: str) -> tuple[int, ...]:
        """A graph input's shape at this profile point, from its manifest dims (batch/height_L/width_L)."""
        b, h, w = getattr(self, which)
        out = []
        for d in dims:
            if d == "batch":
                out.append(b)
            elif isinstance(d, str) and d.startswith(("height_", "width_")):
                level = int(d.rsplit("_", 1)[1])
                out.append((h if d.startswith("height") else w) >> level)
            elif isinstance(d, str):
                raise PackageError(f"dynamic dimension {d!r} has no profile rule")
            else:
                out.append(int(d))
        return tuple(out)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; its hash names the cached engine file."""

    graph_sha256: str
    precision: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    profile: tuple[tuple[int, int, int], ...]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


def engine_key(manifest: Manifest, graph: str, precision: str, profile: Profile, trt_version: str,
               gpu: tuple[str, str]) -> EngineKey:
    return EngineKey(manifest.graphs(precision)[graph]["sha256"], precision, trt_version, gpu[0], gpu[1],
                     (profile.min, profile.opt, profile.max))


def build_engine(trt: Any, onnx_path: Path, inputs: list[dict], profile: Profile, workspace_bytes: int,
                 timing_cache: Path) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PackageError(f"{onnx_path}: TensorRT could not parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    trt_profile = builder.create_optimization_profile()
    for spec in inputs:
        trt_profile.set_shape(spec["name"], *(profile.shape_of(spec["shape"], w) for w in ("min", "opt", "max")))
    config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PackageError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


@dataclass
class EngineRecord:
    graph: str
    precision: str
    file: str
    key: dict[str, Any]
    digest: str


def read_engines(root: Path) -> dict[str, Any]:
    path = root / ENGINES_JSON
    return json.loads(path.read_text()) if path.is_file() else {"engines": []}


def build_engines(manifest: Manifest, precision: str, profile: Profile, workspace_bytes: int,
                  cache_dir: Path, progress=None, trt: Any | None = None,  # noqa: ANN001
                  gpu: tuple[str, str] | None = None) -> list[EngineRecord]:
    """One engine per split-plan graph; cached by :class:`EngineKey`, recorded in engines.json."""
    trt = trt or import_tensorrt()
    gpu = gpu or gpu_identity()
    timing_cache = cache_dir / f"timing-{gpu[0].replace(' ', '_')}-{trt.__version__}.cache"
    records = []
    graphs = {n: g for n, g in manifest.graphs(precision).items() if n not in ("dense", "conditional")}
    for name, entry in graphs.items():
        key = engine_key(manifest, name, precision, profile, trt.__version__, gpu)
        cached = cache_dir / f"{key.digest()}.engine"
        if cached.is_file():
            status = "cached"
        else:
            if progress:
                progress(f"tensorrt {precision}: build {name}")
            data = build_engine(trt, manifest.graph_file(name, precision), entry["inputs"], profile, workspace_bytes,
                                timing_cache)
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(data)
            status = "built"
        target = manifest.root / "engines" / precision / f"{name}.engine"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(cached.read_bytes())
        records.append(EngineRecord(name, precision, str(target.relative_to(manifest.root)), asdict(key), key.digest()))
        if progress:
            progress(f"tensorrt {precision}: {name} {status}")
    _write_engines_json(manifest.root, precision, records)
    return records


def _write_engines_json(root: Path, precision: str, records: list[EngineRecord]) -> None:
    data = read_engines(root)
    data["engines"] = [e for e in data["engines"] if e["precision"] != precision] + [asdict(r) for r in records]
    (root / ENGINES_JSON).write_text(json.dumps(data, indent=2) + "\n")


def check_engines(manifest: Manifest, precision: str, trt_version: str, gpu: tuple[str, str]) -> dict[str, Path]:
    """Engine files for ``precision``; refuses stale ones with the command that rebuilds them."""
    engines = {e["graph"]: e for e in read_engines(manifest.root)["engines"] if e["precision"] == precision}
    rebuild = f"rebuild with: moce build-engine {manifest.root} --{precision}" if precision != "fp32" else \
        f"rebuild with: moce build-engine {manifest.root}"
    needed = [n for n in manifest.graphs(precision) if n not in ("dense", "conditional")]
    missing = [n for n in needed if n not in engines]
    if missing:
        raise PackageError(f"{manifest.root}: no {precision} TensorRT engine for {missing[0]}; {rebuild}")
    out = {}
    for name in needed:
        key = engines[name]["key"]
        reasons = []
        if key["graph_sha256"] != manifest.graphs(precision)[name]["sha256"]:
            reasons.append("its ONNX graph changed")
        if key["trt_version"] != trt_version:
            reasons.append(f"it was built with TensorRT {key['trt_version']}, this is {trt_version}")
        if (key["gpu_name"], key["compute_capability"]) != gpu:
            reasons.append(f"it was built for {key['gpu_name']} (sm {key['compute_capability']}), this is {gpu[0]} (sm {gpu[1]})")
        if reasons:
            raise PackageError(f"{manifest.root}: stale TensorRT engine for {name}: {'; '.join(reasons)}; {rebuild}")
        out[name] = manifest.root / engines[name]["file"]
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
        for name, value in feeds.items():
            tensor = value.contiguous()
            feeds[name] = tensor
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
