"""Building TensorRT engines: a thin layer over TensorRT's documented builder API, one engine per graph.

Only these calls are used (TensorRT 10.x and 11): ``Builder``, ``create_network`` with the
``STRONGLY_TYPED`` flag, ``OnnxParser.parse_from_file``, ``BuilderConfig.set_memory_pool_limit``,
``create_timing_cache``/``set_timing_cache``, optimisation profiles and
``build_serialized_network``; :mod:`moce.runtime.tensorrt_runner` runs the engines. Precision is never
a builder flag: FP16 and INT8 come from the ONNX graph (strongly typed networks), as TensorRT 11
requires.

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

from moce.errors import PackageError
from moce.files import sha256_file, write_bytes_atomic, write_json_atomic
from moce.names import BATCH_DIM, image_dims
from moce.outputs import mark_folder
from moce.package.manifest import EngineEntry, Manifest
from moce.runtime.tensorrt_runner import engine_graphs, gpu_identity, import_tensorrt

MAX_LEVELS = 8
"""Resolution levels a profile has sizes for (MoCE-IR has 4)."""

ENGINE_CACHE = "moce build-engine"
"""What an engine cache folder's marker carries (:mod:`moce.outputs`)."""


@dataclass(frozen=True)
class Profile:
    """Image-level optimisation profile: (batch, height, width) for min, opt and max."""

    min: tuple[int, int, int] = (1, 64, 64)
    opt: tuple[int, int, int] = (1, 512, 512)
    max: tuple[int, int, int] = (4, 1024, 1024)

    def shape_of(self, dims: list[Any], which: str) -> tuple[int, ...]:
        """A graph input's shape at this profile point, from its manifest dims (see :mod:`moce.export.names`)."""
        b, h, w = getattr(self, which)
        sizes: dict[str, int] = {BATCH_DIM: b}
        for level in range(MAX_LEVELS):
            sizes.update(zip(image_dims(level), (h >> level, w >> level)))
        out = []
        for d in dims:
            if isinstance(d, str) and d not in sizes:
                raise PackageError(f"dynamic dimension {d!r} has no profile rule")
            out.append(sizes[d] if isinstance(d, str) else int(d))
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


def engine_key(
    manifest: Manifest, graph: str, precision: str, profile: Profile, trt_version: str, gpu: tuple[str, str]
) -> EngineKey:
    return EngineKey(
        manifest.graphs(precision)[graph].sha256,
        precision,
        trt_version,
        gpu[0],
        gpu[1],
        (profile.min, profile.opt, profile.max),
    )


def build_engine(
    trt: Any, onnx_path: Path, inputs: list[dict], profile: Profile, workspace_bytes: int, timing_cache: Path
) -> bytes:
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
        trt_profile.set_shape(spec.name, *(profile.shape_of(spec.shape, w) for w in ("min", "opt", "max")))
    config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PackageError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def build_engines(
    manifest: Manifest,
    precision: str,
    profile: Profile,
    workspace_bytes: int,
    cache_dir: Path,
    progress=None,
    trt: Any | None = None,  # noqa: ANN001
    gpu: tuple[str, str] | None = None,
) -> list[EngineEntry]:
    """One engine per graph of :func:`moce.runtime.tensorrt_runner.engine_graphs`; cached by :class:`EngineKey`,
    recorded in the manifest."""
    trt = trt or import_tensorrt()
    gpu = gpu or gpu_identity()
    mark_folder(cache_dir, ENGINE_CACHE)  # before its timing cache and engines are written there
    timing_cache = cache_dir / f"timing-{gpu[0].replace(' ', '_')}-{trt.__version__}.cache"
    records = []
    for name in engine_graphs(manifest, precision):
        entry = manifest.graphs(precision)[name]
        key = engine_key(manifest, name, precision, profile, trt.__version__, gpu)
        data = cached_engine(cache_dir, key.digest())
        status = "cached"
        if data is None:
            if progress:
                progress(f"tensorrt {precision}: build {name}")
            data = build_engine(
                trt, manifest.graph_file(name, precision), entry.inputs, profile, workspace_bytes, timing_cache
            )
            store_engine(cache_dir, key.digest(), data)
            status = "built"
        target = manifest.root / "engines" / precision / f"{name}.engine"
        write_bytes_atomic(target, data)
        records.append(_entry(key, name, target.relative_to(manifest.root).as_posix(), sha256_file(target)))
        if progress:
            progress(f"tensorrt {precision}: {name} {status}")
    manifest.set_engines(precision, records)
    manifest.write()
    return records


def cached_engine(cache_dir: Path, digest: str) -> bytes | None:
    """The engine cached under ``digest``, or None when there is none to trust: an engine is reused
    only when its record (written after it) is there and its size and SHA-256 match the record."""
    engine, record = cache_dir / f"{digest}.engine", cache_dir / f"{digest}.engine.json"
    try:
        expected = json.loads(record.read_bytes())
        data = engine.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(expected, dict) or expected.get("bytes") != len(data):
        return None
    return data if expected.get("sha256") == hashlib.sha256(data).hexdigest() else None


def store_engine(cache_dir: Path, digest: str, data: bytes) -> None:
    """Cache an engine: the file first, then the record of its size and hash that makes it trusted,
    each written whole or not at all (a build killed in between leaves nothing that is reused)."""
    write_bytes_atomic(cache_dir / f"{digest}.engine", data)
    write_json_atomic(
        cache_dir / f"{digest}.engine.json", {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    )


def _entry(key: EngineKey, graph: str, file: str, sha256: str) -> EngineEntry:
    return EngineEntry(
        graph=graph,
        precision=key.precision,
        file=file,
        sha256=sha256,
        graph_sha256=key.graph_sha256,
        trt_version=key.trt_version,
        gpu_name=key.gpu_name,
        compute_capability=key.compute_capability,
        profile=[list(p) for p in key.profile],
        digest=key.digest(),
    )
