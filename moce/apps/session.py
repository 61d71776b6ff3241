"""The public Python API: open a model once, then restore arrays, files and batches with it.

:func:`open_session` (``moce.open``) resolves the model the one way every command does
(:func:`moce.runtime.resolve.open_model`), settles the options once (:func:`settle`: the
tile-pass rule lives here and nowhere else), picks the backend's runner and activates it on first
use. Every front end restores through a :class:`Session`: ``moce restore`` (local and on Ray
workers), the Triton model, ``bench``, ``compare``, ``evaluate`` and ``demo``, so an image gives
the same bytes whichever of them restores it.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from moce.apps.memory import default_budget, memory_model, probe_spec
from moce.errors import InputError
from moce.imageio import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    array_to_rgb,
    check_min_side,
    check_pixels,
    conversion_loss,
    decode_image,
    from_rgb_float,
    read_image,
    rgb_to_array,
    storage_of,
    write_image_atomic,
)
from moce.names import GRAPH_PRECISIONS, ROUTING_MODES
from moce.package.manifest import Manifest, SegmentEntry
from moce.progress import Messages, Progress, quiet
from moce.runtime.backends import (
    BACKENDS,
    BackendChoice,
    cpu_bf16_units,
    cuda_available,
    make_runner,
    nvidia_gpu_present,
)
from moce.runtime.executor import PlanExecutor
from moce.runtime.resolve import open_model
from moce.runtime.restorer import ImageResult, MemoryBudget, RestoreOptions, Restorer, check_restore_options
from moce.runtime.tile_plan import AUTO, TilePlan, gib

if TYPE_CHECKING:  # a package needs no PyTorch
    from moce.model.network import MoCEIR

T = TypeVar("T")


@dataclass(frozen=True)
class SessionOptions:
    """How a session restores: the backend and its precision, the routing form, tiling and batching.

    The same fields, with the same defaults, as ``moce restore``'s options of those names.
    """

    backend: str = "auto"  # auto, tensorrt, onnxruntime or torch
    device: str | None = None  # cpu or cuda; None: cuda where the backend has it
    precision: str = "fp32"  # fp32, fp16, bf16 (torch) or int8 (ONNX graphs from `moce build-engine`)
    routing: str = "split"  # split, conditional or dense
    tile: int | str = AUTO  # auto: untiled if the image fits max_memory, else the largest tiles that do; N: N px tiles
    overlap: int = 32
    route_per: str = "image"  # image: one route for a whole tiled image; tile: each tile routes itself
    route_size: int | None = None  # longest side of a tiled image's routing pass; None: the tile side (auto: 512)
    tile_passes: int | None = None  # passes over the tiles sharing image-wide sums; None: 1 with auto, 3 with N
    max_memory: float | None = None  # bytes tile auto plans for; None: half the memory available at open
    batch: int = 1  # same-sized images, or tiles, per inference call
    threads: int | None = None  # CPU threads of the backend; None: all cores
    cuda_graphs: bool = False  # torch on CUDA: replay CUDA graphs
    compile: bool = False  # torch: each segment and expert through torch.compile (inductor)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused before they are decoded

    def restore_options(self) -> RestoreOptions:
        """The fields that decide how one image is restored (tiling, routing form, batching)."""
        return RestoreOptions(**{f.name: getattr(self, f.name) for f in fields(RestoreOptions)})


@dataclass
class RestoreResult:
    """One restored image.

    ``image`` has the input's type and layout (uint8, uint16 or float32; gray, RGB or RGBA, alpha
    passed through); ``routes[a]`` are the experts adapter ``a`` ran and ``probs[a]`` its router's
    softmax (None when each tile routed itself); ``seconds`` is the restoring time alone.
    """

    image: np.ndarray
    routes: list[list[int]]
    probs: list[list[float]] | None
    seconds: float
    tiles: int = 1
    expert_flops: float = 0.0
    dense_expert_flops: float = 0.0
    tile_routes: list[list[list[int]]] = field(default_factory=list)
    plan: TilePlan | None = None  # how the image was cut, and why (None: untiled with others of its size)

    @property
    def expert_compute_skipped(self) -> float:
        """The share of expert FLOPs a dense pass would run that routing skipped."""
        return 1.0 - self.expert_flops / self.dense_expert_flops if self.dense_expert_flops else 0.0


DEVICE = re.compile(r"cpu|cuda(:\d+)?")
"""What ``--device`` takes: ``cpu``, ``cuda`` or ``cuda:N``."""


def check_options(options: SessionOptions, multiple: int = 8) -> None:
    """Refuse, before any backend loads, option values no run could use."""
    if options.device is not None and not DEVICE.fullmatch(options.device):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {options.device}")
    if options.routing not in ROUTING_MODES:
        raise InputError(f"--routing must be one of {', '.join(ROUTING_MODES)}, got {options.routing}")
    if options.compile and options.backend != "torch":
        raise InputError(f"--compile compiles the torch backend's model; add --backend torch (got {options.backend})")
    if options.threads is not None and options.threads < 1:
        raise InputError(f"--threads must be at least 1 (leave it out for all cores), got {options.threads}")
    if options.max_pixels < 64:
        raise InputError(f"--max-pixels must be at least 64, got {options.max_pixels}")
    check_restore_options(options.restore_options(), multiple)


def settle(options: SessionOptions) -> tuple[RestoreOptions, str | None]:
    """The restore options a run actually uses, and the note to give when the first image is tiled:
    image-wide sums across tiles run in the fp32 tile graphs only, so at any other precision tiles
    make one pass."""
    restore = options.restore_options()
    if options.precision != "fp32" and restore.passes() > 1:
        note = f"tile passes: 1 (image-wide sums run in the fp32 tile graphs only, not at {options.precision})"
        return replace(restore, tile_passes=1), note
    return restore, None


def check_graphs(manifest: Manifest, options: SessionOptions, backend: str) -> None:
    """A backend that runs the package's graphs needs them at the requested precision (fp16 and
    int8 come from ``moce build-engine``), and a whole-network routing form needs its graph there
    (:func:`make_runner` has checked that the backend runs the form at all)."""
    if not BACKENDS[backend].whole_from_package:
        return
    if options.precision in GRAPH_PRECISIONS:
        manifest.graphs(options.precision)  # refused with the command that builds them
    routing = options.routing
    if routing == "split":
        return
    if routing not in manifest.graphs(options.precision):
        why = manifest.info.get("routing", {}).get("forms", {}).get(routing, "not exported")
        raise InputError(
            f"--routing {routing}: {manifest.root} has no {options.precision} {routing} graph ({why}); "
            "use --routing split"
        )


def check_device(options: SessionOptions) -> None:
    """Refuse a CUDA device this machine does not have, instead of running on the CPU unasked."""
    if not (options.device or "").startswith("cuda"):
        return
    if not nvidia_gpu_present():
        raise InputError(f"--device {options.device}: this machine shows no NVIDIA GPU; use --device cpu")
    if options.backend == "torch" and not cuda_available():
        raise InputError(f"--device {options.device}: PyTorch here has no CUDA (a CPU build?); use --device cpu")


def slow_path_warning(choice: BackendChoice, precision: str) -> str | None:
    """One line for a slow path chosen on purpose, with the faster choice."""
    device = getattr(choice.runner, "device", None)
    if choice.name != "torch" or getattr(device, "type", None) != "cpu":
        return None
    if precision == "fp16":
        return (
            "warning: fp16 on the CPU runs several times slower than fp32 in PyTorch (no fp16 arithmetic "
            "units); --precision fp32 is faster here (bf16 too, on CPUs with AVX512_BF16 or AMX)"
        )
    if precision == "bf16" and not cpu_bf16_units():
        return (
            "warning: this CPU has no bfloat16 units (AVX512_BF16 or AMX), so PyTorch emulates bf16, "
            "many times slower than fp32; --precision fp32 is faster here"
        )
    return None


def make_choice(manifest: Manifest, options: SessionOptions) -> BackendChoice:
    """The backend's runner for ``options`` (not activated): a named backend is checked against the
    package before it loads anything, ``auto``'s pick after."""
    check_device(options)
    if options.backend in BACKENDS:
        check_graphs(manifest, options, options.backend)
    choice = make_runner(
        options.backend,
        manifest,
        options.device,
        options.threads,
        options.precision,
        options.cuda_graphs,
        options.routing,
        options.compile,
    )
    if options.backend not in BACKENDS:
        check_graphs(manifest, options, choice.name)
    return choice


class Session:
    """A model ready to restore with one backend, precision and set of options.

    Use it as a context manager (or call :meth:`close`): the backend's runner is activated on
    entry or first use and released on exit. Not thread-safe: use one session per thread.
    """

    def __init__(self, manifest: Manifest, options: SessionOptions | None = None, progress: Messages = quiet) -> None:
        self.manifest = manifest
        self.options = options or SessionOptions()
        check_options(self.options, manifest.size_multiple)
        self.choice = make_choice(manifest, self.options)
        self.restore_options, self._tiling_note = settle(self.options)
        self._say = progress
        self.memory = self._budget(progress) if self.restore_options.tile == AUTO else None
        warning = slow_path_warning(self.choice, self.options.precision)
        if warning:
            progress(warning)
        self._restorer: Restorer | None = None

    def _budget(self, progress: Messages) -> MemoryBudget:
        """``--tile auto``'s budget, fixed when the session opens, and its memory model, measured
        (or read from the cache) when the first image needs it."""
        device = runner_device(self.choice)
        spec = probe_spec(self.manifest, self.choice.name, device, self.options)
        model = functools.cache(lambda: memory_model(self.manifest, spec, progress))  # once per session
        where = "device memory" if device.startswith("cuda") else "RAM"
        if self.options.max_memory is not None:
            return MemoryBudget(self.options.max_memory, model, True, "--max-memory")
        budget = default_budget(device)
        return MemoryBudget(budget, model, False, f"half the {where} available when the session opened")

    def tiled_once(self) -> None:
        """Say the tiling note (one pass at this precision) once, when the first image is tiled."""
        note, self._tiling_note = self._tiling_note, None
        if note:
            self._say(note)

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Session:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def activate(self) -> None:
        """Load the backend (sessions, engines or the PyTorch model); idempotent."""
        if self._restorer is None:
            self.choice.runner.activate()
            self.choice.runner.load(self._first_graphs())
            executor = PlanExecutor(self.manifest, self.choice.runner)
            self._restorer = Restorer(executor, self.restore_options, self.memory)

    def _first_graphs(self) -> list[str]:
        """The graphs every image runs, loaded at activation: the trunk segments of the split plan, or
        the whole-network graph. Experts still load when first chosen (unused ones never do)."""
        routing = self.restore_options.routing
        if routing != "split":
            return [routing]
        return [step.graph for step in self.manifest.plan_entries if isinstance(step, SegmentEntry)]

    def close(self) -> None:
        """Release the backend; the session activates it again if used after this."""
        if self._restorer is not None:
            self._restorer = None
            self.choice.runner.deactivate()

    @property
    def restorer(self) -> Restorer:
        self.activate()
        assert self._restorer is not None
        return self._restorer

    @property
    def backend(self) -> str:
        return self.choice.name

    # -- restoring ----------------------------------------------------------------------------

    def restore(self, image: np.ndarray, progress: Progress | None = None) -> RestoreResult:
        """Restore one ``H x W x C`` image (C = 1, 3 or 4, RGB(A) order; or ``H x W`` gray) of
        uint8, uint16 or float32 (in [0, 1]); the result has the input's type and layout.

        ``progress`` hears of a tiled image's tile runs as they finish (``tiles(total)``, then
        ``tile_done(count)``), for a bar or an ETA inside one large image."""
        return self.restore_many([image], progress)[0]

    def restore_many(self, images: Iterable[np.ndarray], progress: Progress | None = None) -> list[RestoreResult]:
        """Restore several images; same-sized ones run together, up to ``batch`` per call."""
        arrays = list(images)
        decoded = [self.decode(image, f"image {i}") for i, image in enumerate(arrays)]
        results = self.restore_rgb([rgb for rgb, _ in decoded], progress)
        return [
            self._result(result, _like(rgb_to_array(result.restored, info), array))
            for result, (_, info), array in zip(results, decoded, arrays)
        ]

    def restore_file(
        self,
        source: str | Path,
        dest: str | Path,
        *,
        overwrite: bool = False,
        allow_lossy: bool = False,
        quality: int | None = None,
        progress: Progress | None = None,
    ) -> RestoreResult:
        """Restore the image file ``source`` into ``dest`` (written whole or not at all), exactly as
        ``moce restore`` writes it; an existing ``dest``, or a format of ``dest`` that cannot hold
        the source's depth or alpha, is refused unless ``overwrite`` / ``allow_lossy``."""
        source, dest = Path(source), Path(dest)
        if os.path.realpath(dest) == os.path.realpath(source):
            raise InputError(f"{dest}: is the input; overwrite replaces earlier outputs, never the photo restored")
        if dest.exists() and not overwrite:
            raise InputError(f"{dest}: exists; pass overwrite=True to replace it")
        rgb, info = self.read(source)
        loss = None if allow_lossy else conversion_loss(*storage_of(info), dest.suffix)
        if loss:
            raise InputError(f"{source}: restored as {dest.suffix}, {loss}; pass allow_lossy=True to convert anyway")
        result = self.restore_rgb([rgb], progress)[0]
        write_restored(dest, result.restored, info, quality)
        return self._result(result, None)

    def restore_rgb(self, images: list[np.ndarray], progress: Progress | None = None) -> list[ImageResult]:
        """The float path under every front end: ``H x W x 3`` float32 RGB in, :class:`ImageResult`
        out, same-sized images grouped into calls of up to ``batch`` (the first error is raised)."""
        order = sorted(range(len(images)), key=lambda i: images[i].shape)  # stable: same sizes stay in order
        results: dict[int, ImageResult] = {}

        def done(index: int, outcome: ImageResult | Exception) -> None:
            if isinstance(outcome, Exception):
                raise outcome
            results[index] = outcome

        batcher = Batcher(self, done, *((progress.tiles, progress.tile_done) if progress else ()))
        for i in order:
            batcher.add(i, images[i])
        batcher.flush()
        return [results[i] for i in range(len(images))]

    # -- images in and out --------------------------------------------------------------------

    def read(self, path: Path, data: bytes | None = None) -> tuple[np.ndarray, ImageInfo]:
        """Decode an image file (or its bytes, read elsewhere) as the float RGB the runtime restores,
        refusing what this session cannot restore (too many pixels, too small)."""
        if data is None:
            rgb, info = read_image(path, self.options.max_pixels)
        else:
            rgb, info = decode_image(path, data, self.options.max_pixels)
        check_min_side(path, rgb.shape[1], rgb.shape[0])
        return rgb, info

    def decode(self, image: np.ndarray, label: str) -> tuple[np.ndarray, ImageInfo]:
        """:meth:`read` for an array in memory (RGB(A) order)."""
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
            raise InputError(f"{label}: expected an H x W or H x W x C array, got {type(image).__name__}")
        check_min_side(label, image.shape[1], image.shape[0])
        check_pixels(label, image.shape[1], image.shape[0], self.options.max_pixels)
        return array_to_rgb(image, label)

    def _result(self, result: ImageResult, image: np.ndarray | None) -> RestoreResult:
        return RestoreResult(
            image if image is not None else result.restored,
            result.routes,
            result.probs,
            result.seconds,
            result.tiles,
            result.expert_flops,
            result.dense_expert_flops,
            result.tile_routes,
            result.plan,
        )

    # -- what it is ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The backend and why it was chosen, the precision, routing and tiling in force, and every
        adapter's experts with their cost (FLOPs per pixel)."""
        opts = self.restore_options
        return {
            "model": str(self.manifest.root),
            "backend": self.choice.name,
            "backend_reason": self.choice.reason,
            "precision": self.options.precision,
            "routing": opts.routing,
            "tiling": self.tiling(),
            "batch": opts.batch,
            "trunk_flops_per_pixel": self.manifest.trunk_flops_per_pixel(),
            "adapters": [
                {
                    "index": a.index,
                    "top_k": a.top_k,
                    "experts": [
                        {
                            "expert": e.expert,
                            "rank": e.rank,
                            "patch_size": e.patch_size,
                            "params": e.params,
                            "complexity": e.complexity,
                            "flops_per_pixel": e.flops_per_pixel,
                        }
                        for e in a.experts
                    ],
                }
                for a in self.manifest.adapters()
            ],
        }

    def tiling(self) -> dict[str, Any]:
        """The tiling in force: ``--tile``, overlap, routing per image or tile, passes, and under
        ``--tile auto`` the memory budget, where it came from and the model's measured memory use."""
        opts = self.restore_options
        tiling: dict[str, Any] = {"tile": opts.tile, "overlap": opts.overlap, "route_per": opts.route_per}
        tiling["passes"] = opts.passes()
        if self.memory is not None:
            tiling["max_memory"] = gib(self.memory.bytes)
            tiling["max_memory_bytes"] = int(self.memory.bytes)
            tiling["budget"] = self.memory.why
        return tiling

    def __repr__(self) -> str:
        return (
            f"Session({str(self.manifest.root)!r}, backend={self.choice.name!r}, "
            f"precision={self.options.precision!r}, routing={self.options.routing!r})"
        )


class Batcher(Generic[T]):
    """The one place that groups images into inference calls: consecutive same-sized untiled
    images, up to ``batch``, run together; an image larger than a tile runs alone, in tiles.

    ``done(item, outcome)`` receives each item's :class:`ImageResult`, or the exception its call
    raised (every item of a failed call gets it). At most ``batch`` images are held at a time.
    """

    def __init__(
        self,
        session: Session,
        done: Callable[[T, ImageResult | Exception], None],
        tiles: Callable[[int], None] | None = None,
        tile_done: Callable[[int], None] | None = None,
    ) -> None:
        self.session, self.done = session, done
        self.on_tiles, self.on_tile_done = tiles, tile_done
        self.pending: list[tuple[T, np.ndarray]] = []
        self.plans: list[TilePlan] = []

    def add(self, item: T, rgb: np.ndarray) -> None:
        restorer = self.session.restorer
        try:
            plan = restorer.plan(rgb)
        except InputError as exc:  # over the memory budget: this image fails, the others go on
            self.flush()
            self.done(item, exc)
            return
        if plan.tiled:
            self.flush()
            self._tiled(item, rgb, plan)
            return
        if self.pending and self.pending[0][1].shape != rgb.shape:
            self.flush()
        self.pending.append((item, rgb))
        self.plans.append(plan)
        if len(self.pending) >= restorer.options.batch:
            self.flush()

    def flush(self) -> None:
        items, self.pending = self.pending, []
        plans, self.plans = self.plans, []
        if not items:
            return
        start = time.perf_counter()
        try:
            results = self.session.restorer.restore_batch([rgb for _, rgb in items])
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failed call means
            for item, _ in items:
                self.done(item, exc)
            return
        seconds = (time.perf_counter() - start) / len(items)
        for (item, _), result, plan in zip(items, results, plans):
            result.seconds, result.plan = seconds, plan
            self.done(item, result)

    def _tiled(self, item: T, rgb: np.ndarray, plan: TilePlan) -> None:
        restorer = self.session.restorer
        self.session.tiled_once()
        start = time.perf_counter()
        try:
            if self.on_tiles:
                self.on_tiles(plan.tiles * plan.passes)
            result = restorer.restore_tiled(rgb, self.on_tile_done, plan)
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failed image means
            self.done(item, exc)
            return
        result.seconds = time.perf_counter() - start
        self.done(item, result)


def runner_device(choice: BackendChoice) -> str:
    """Where a backend's runner computes: ``cpu``, or ``cuda``/``cuda:N``."""
    device = getattr(choice.runner, "device", None)
    if device is not None:
        return str(device)
    providers = getattr(choice.runner, "providers", ["CPUExecutionProvider"])
    return "cuda" if choice.name == "tensorrt" or providers[0] == "CUDAExecutionProvider" else "cpu"


def _like(out: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``out`` with ``given``'s number of axes (a gray ``H x W x 1`` input gets ``H x W x 1`` back)."""
    return out[:, :, None] if out.ndim == 2 and given.ndim == 3 else out


def write_restored(path: Path, restored: np.ndarray, info: ImageInfo, quality: int | None = None) -> None:
    """Write a restored float RGB image the way its input was stored (depth, gray, alpha), atomically."""
    write_image_atomic(path, from_rgb_float(restored, info, path.suffix), quality, info.metadata)


def open_session(
    model: str | Path | MoCEIR | None = None,
    *,
    backend: str = "auto",
    device: str | None = None,
    precision: str = "fp32",
    routing: str = "split",
    tile: int | str = AUTO,
    overlap: int = 32,
    route_per: str = "image",
    route_size: int | None = None,
    tile_passes: int | None = None,
    max_memory: float | None = None,
    batch: int = 1,
    threads: int | None = None,
    cuda_graphs: bool = False,
    compile: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Messages = quiet,
) -> Session:
    """Open ``model`` for restoring: a package folder, a checkpoint (exported and validated once
    into the cache), a ``MoCEIR`` module, or None for the bundled demo model.

    Everything that can be refused is refused here, before any image: unreadable or tampered
    packages, unknown backends and precisions, option values no run could use.
    """
    options = SessionOptions(
        backend=backend,
        device=device,
        precision=precision,
        routing=routing,
        tile=tile,
        overlap=overlap,
        route_per=route_per,
        route_size=route_size,
        tile_passes=tile_passes,
        max_memory=max_memory,
        batch=batch,
        threads=threads,
        cuda_graphs=cuda_graphs,
        compile=compile,
        max_pixels=max_pixels,
    )
    check_options(options)
    return Session(open_model(model, progress), options, progress)
