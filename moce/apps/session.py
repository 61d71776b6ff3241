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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from dataclasses import fields as fields_of
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moce.apps.batcher import Batcher
from moce.apps.memory import default_budget, memory_model, probe_spec
from moce.apps.session_options import (
    SessionOptions,
    check_options,
    make_choice,
    runner_device,
    settle,
    slow_path_warning,
)
from moce.apps.shots import check_route_per
from moce.apps.stop import StopRequest
from moce.apps.video import VideoOptions, VideoResult, encoding_for, read_clip, restore_video
from moce.errors import InputError
from moce.imageio import (
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
from moce.package.manifest import Manifest, SegmentEntry
from moce.progress import Messages, Progress, quiet
from moce.routing import Route
from moce.runtime.executor import PlanExecutor
from moce.runtime.resolve import open_model
from moce.runtime.restorer import ImageResult, MemoryBudget, Restorer, skipped_share
from moce.runtime.tile_plan import AUTO, TilePlan, gib

if TYPE_CHECKING:  # a package needs no PyTorch
    from moce.model.network import MoCEIR

RouteLike = Sequence[Sequence[int] | int]
"""Experts per adapter as a caller gives them: ``[[2], [0], [3]]`` or, with top-1, ``[2, 0, 3]``."""


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
        return skipped_share(self.expert_flops, self.dense_expert_flops)


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

    def restore(
        self, image: np.ndarray, progress: Progress | None = None, *, route: RouteLike | None = None
    ) -> RestoreResult:
        """Restore one ``H x W x C`` image (C = 1, 3 or 4, RGB(A) order; or ``H x W`` gray) of
        uint8, uint16 or float32 (in [0, 1]); the result has the input's type and layout.

        ``progress`` hears of a tiled image's tile runs as they finish (``tiles(total)``, then
        ``tile_done(count)``), for a bar or an ETA inside one large image. ``route``: the experts
        each adapter runs (``[[2], [0], [3]]``, as ``RestoreResult.routes`` gives them), gated by
        the image's own routers; by default the image routes itself."""
        return self.restore_many([image], progress, route=route)[0]

    def restore_many(
        self, images: Iterable[np.ndarray], progress: Progress | None = None, *, route: RouteLike | None = None
    ) -> list[RestoreResult]:
        """Restore several images; same-sized ones run together, up to ``batch`` per call."""
        arrays = list(images)
        decoded = [self.decode(image, f"image {i}") for i, image in enumerate(arrays)]
        results = self.restore_rgb([rgb for rgb, _ in decoded], progress, route=route)
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
        _check_dest(source, dest, overwrite)
        rgb, info = self.read(source)
        loss = None if allow_lossy else conversion_loss(*storage_of(info), dest.suffix)
        if loss:
            raise InputError(f"{source}: restored as {dest.suffix}, {loss}; pass allow_lossy=True to convert anyway")
        result = self.restore_rgb([rgb], progress)[0]
        write_restored(dest, result.restored, info, quality)
        return self._result(result, None)

    def restore_video(
        self,
        source: str | Path,
        dest: str | Path,
        *,
        route_per: str = "shot",
        codec: str | None = None,
        crf: int | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        stop: StopRequest | None = None,
    ) -> VideoResult:
        """Restore the clip ``source`` into ``dest`` (written whole or not at all), as ``moce restore``
        does: every frame at its timestamp, other streams copied packet for packet, colour tags,
        rotation and metadata kept. ``route_per``: ``shot`` (one route per shot), ``frame`` or
        ``video``; ``codec``/``crf``: the encoder (default: the input's codec). ``stop``: a
        :class:`StopRequest` that ends the clip early (:class:`VideoInterrupted`, nothing written)."""
        source, dest = Path(source), Path(dest)
        _check_dest(source, dest, overwrite)
        options = VideoOptions(route_per=route_per, codec=codec, crf=crf)
        check_route_per(options.route_per, self.restore_options.routing)
        info = read_clip(source, self.options.max_pixels)
        checked = info, encoding_for(info, dest, options)
        return restore_video(self, source, dest, checked, options, progress=progress, stop=stop)

    def restore_rgb(
        self, images: list[np.ndarray], progress: Progress | None = None, *, route: RouteLike | None = None
    ) -> list[ImageResult]:
        """The float path under every front end: ``H x W x 3`` float32 RGB in, :class:`ImageResult`
        out, same-sized images grouped into calls of up to ``batch`` (the first error is raised)."""
        imposed = self.route(route)
        order = sorted(range(len(images)), key=lambda i: images[i].shape)  # stable: same sizes stay in order
        results: dict[int, ImageResult] = {}

        def done(index: int, outcome: ImageResult | Exception) -> None:
            if isinstance(outcome, Exception):
                raise outcome
            results[index] = outcome

        batcher = Batcher(self, done, *((progress.tiles, progress.tile_done) if progress else ()))
        for i in order:
            batcher.add(i, images[i], imposed)
        batcher.flush()
        return [results[i] for i in range(len(images))]

    def route(self, given: RouteLike | None) -> Route | None:
        """``given`` checked against this model (one entry per adapter, ``top_k`` experts each, every
        index an expert) as the hashable :data:`~moce.routing.Route` the runtime imposes."""
        if given is None:
            return None
        adapters = self.manifest.adapters()
        try:
            route = tuple(tuple(int(e) for e in ([experts] if np.isscalar(experts) else experts)) for experts in given)
        except (TypeError, ValueError):
            raise InputError(f"route {given!r}: expected one list of expert indices per adapter") from None
        counts = [len(a.experts) for a in adapters]
        if len(route) != len(adapters) or any(
            len(r) != a.top_k or len(set(r)) != len(r) or not all(0 <= e < n for e in r)
            for r, a, n in zip(route, adapters, counts)
        ):
            raise InputError(
                f"route {given!r}: this model has {len(adapters)} adapters of {counts} experts, "
                f"{adapters[0].top_k} chosen each"
            )
        if self.restore_options.routing != "split":
            raise InputError(f"route {given!r}: imposing experts needs routing='split'")
        return route

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
            image=image if image is not None else result.restored,
            routes=result.routes,
            probs=result.probs,
            seconds=result.seconds,
            tiles=result.tiles,
            expert_flops=result.expert_flops,
            dense_expert_flops=result.dense_expert_flops,
            tile_routes=result.tile_routes,
            plan=result.plan,
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


def _like(out: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``out`` with ``given``'s number of axes (a gray ``H x W x 1`` input gets ``H x W x 1`` back)."""
    return out[:, :, None] if out.ndim == 2 and given.ndim == 3 else out


def _check_dest(source: Path, dest: Path, overwrite: bool) -> None:
    """The API's file rule: never the input, an existing ``dest`` only with ``overwrite``."""
    if os.path.realpath(dest) == os.path.realpath(source):
        raise InputError(f"{dest}: is the input; overwrite replaces earlier outputs, never the file restored")
    if dest.exists() and not overwrite:
        raise InputError(f"{dest}: exists; pass overwrite=True to replace it")


def write_restored(path: Path, restored: np.ndarray, info: ImageInfo, quality: int | None = None) -> None:
    """Write a restored float RGB image the way its input was stored (depth, gray, alpha), atomically."""
    write_image_atomic(path, from_rgb_float(restored, info, path.suffix), quality, info.metadata)


def open_session(
    model: str | Path | MoCEIR | None = None,
    options: SessionOptions | None = None,
    *,
    progress: Messages = quiet,
    **fields: Any,
) -> Session:
    """Open ``model`` for restoring: a package folder, a checkpoint (exported and validated once
    into the cache), a ``MoCEIR`` module, or None for the bundled demo model. ``fields`` are any of
    :class:`SessionOptions`'s by name, over ``options`` (``moce.open(pkg, backend="onnxruntime",
    tile=512)``): the options and their defaults are declared there alone.

    Everything that can be refused is refused here, before any image: unreadable or tampered
    packages, unknown backends and precisions, option values no run could use.
    """
    known = {f.name for f in fields_of(SessionOptions)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(
            f"unknown session option(s) {', '.join(unknown)}; SessionOptions has {', '.join(sorted(known))}"
        )
    options = replace(options or SessionOptions(), **fields)
    check_options(options)
    return Session(open_model(model, progress), options, progress)
