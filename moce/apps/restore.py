"""`moce restore`: restore a file or a folder of images, resumably, with a report.

Every image is independent: one that cannot be read or written is reported with its path and
reason and the others go on. Outputs are written atomically and existing ones are skipped, so
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from moce.errors import InputError, MoceError
from moce.files import write_bytes_atomic
from moce.imageio import SUPPORTED, ImageInfo, from_rgb_float, read_image, write_image_atomic
from moce.runtime.backends import make_runner
from moce.runtime.executor import ROUTING_MODES, PlanExecutor
from moce.runtime.resolve import resolve_model
from moce.runtime.restorer import ImageResult, RestoreOptions, Restorer


class Progress(Protocol):
    """What the restore loop reports; the CLI draws it, tests may record it."""

    def start(self, images: int) -> None: ...
    def image_done(self, path: Path, status: str) -> None: ...
    def tiles(self, total: int) -> None: ...
    def tile_done(self, count: int) -> None: ...
    def message(self, text: str) -> None: ...


class NoProgress:
    def start(self, images: int) -> None: ...
    def image_done(self, path: Path, status: str) -> None: ...
    def tiles(self, total: int) -> None: ...
    def tile_done(self, count: int) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class RestoreJob:
    inputs: Path
    output: Path
    model: str | Path | None = None
    backend: str = "auto"
    device: str | None = None
    precision: str = "fp32"
    options: RestoreOptions = field(default_factory=RestoreOptions)
    recursive: bool = False
    include: tuple[str, ...] = ()
    ext: str | None = None
    overwrite: bool = False
    report: Path | None = None
    threads: int | None = None
    jpeg_quality: int = 95


@dataclass
class ImageRecord:
    input: str
    output: str | None
    status: str  # "ok" | "error"
    error: str | None
    seconds: float
    routes: list[Any] | None = None
    gates: list[Any] | None = None
    margins: list[float] | None = None
    tiles: int = 0
    expert_flops: float = 0.0
    dense_expert_flops: float = 0.0


@dataclass
class RestoreSummary:
    backend: str
    backend_reason: str
    precision: str
    routing: str
    records: list[ImageRecord]
    skipped: list[str]
    seconds: float
    tiling: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == "error"]

    @property
    def restored(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == "ok"]

    @property
    def expert_compute_skipped(self) -> float:
        dense = sum(r.dense_expert_flops for r in self.restored)
        return 1.0 - sum(r.expert_flops for r in self.restored) / dense if dense else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "precision": self.precision,
            "routing": self.routing,
            "tiling": self.tiling,
            "totals": {
                "images": len(self.records),
                "ok": len(self.restored),
                "errors": len(self.failed),
                "skipped_existing": len(self.skipped),
                "seconds": round(self.seconds, 3),
                "images_per_second": len(self.restored) / self.seconds if self.seconds else 0.0,
                "expert_compute_skipped": self.expert_compute_skipped,
            },
            "images": [vars(r) for r in self.records],
            "skipped": self.skipped,
        }


def discover(inputs: Path, recursive: bool, include: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """The root that output paths are relative to, and the image files to process (sorted)."""
    if not inputs.exists():
        raise InputError(f"{inputs}: no such file or folder")
    if inputs.is_file():
        return inputs.parent, [inputs]
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p for p in inputs.glob(pattern) if p.is_file() and p.suffix.lower() in SUPPORTED and not p.name.startswith(".")
    )
    if include:
        files = [
            p
            for p in files
            if any(fnmatch.fnmatch(p.relative_to(inputs).as_posix(), g) or fnmatch.fnmatch(p.name, g) for g in include)
        ]
    return inputs, files


def output_path(job: RestoreJob, root: Path, source: Path) -> Path:
    suffix = f".{job.ext.lstrip('.')}" if job.ext else source.suffix
    if job.inputs.is_file() and job.output.suffix.lower() in SUPPORTED:
        return job.output
    return (job.output / source.relative_to(root)).with_suffix(suffix)


def _check_paths(job: RestoreJob) -> None:
    if job.ext and f".{job.ext.lstrip('.').lower()}" not in SUPPORTED:
        raise InputError(f"--ext {job.ext}: unsupported; choose from {', '.join(s.lstrip('.') for s in SUPPORTED)}")
    if job.inputs.is_dir():
        inp, out = job.inputs.resolve(), job.output.resolve()
        if out == inp or inp in out.parents:
            raise InputError(f"{job.output}: the output folder is inside the input tree {job.inputs}; choose another")
    if job.options.routing not in ROUTING_MODES:
        raise InputError(f"--routing must be one of {', '.join(ROUTING_MODES)}")


def _record(path: Path, out: Path, result: ImageResult, seconds: float) -> ImageRecord:
    margins = None
    gates = None
    if result.probs is not None:
        probs = [np.asarray(p) for p in result.probs]
        gates = [[float(p[e]) for e in route] for p, route in zip(probs, result.routes)]
        margins = [float(np.diff(np.sort(p)[-2:])[0]) if p.size > 1 else float(p[0]) for p in probs]
    routes: list[Any] = [r[0] if len(r) == 1 else r for r in result.routes]
    return ImageRecord(
        str(path),
        str(out),
        "ok",
        None,
        round(seconds, 4),
        routes,
        gates,
        margins,
        result.tiles,
        result.expert_flops,
        result.dense_expert_flops,
    )


def _error(path: Path, out: Path | None, exc: BaseException, seconds: float) -> ImageRecord:
    message = str(exc) if isinstance(exc, MoceError) else f"{path}: {type(exc).__name__}: {exc}"
    return ImageRecord(str(path), str(out) if out else None, "error", message.splitlines()[0], round(seconds, 4))


@dataclass
class _Pending:
    path: Path
    out: Path
    image: np.ndarray
    info: ImageInfo
    started: float


class _Loop:
    """The per-image loop: read, batch same-sized untiled images, restore, write."""

    def __init__(self, job: RestoreJob, restorer: Restorer, progress: Progress) -> None:
        self.job, self.restorer, self.progress = job, restorer, progress
        self.records: list[ImageRecord] = []
        self.pending: list[_Pending] = []

    def add(self, path: Path, out: Path) -> None:
        started = time.perf_counter()
        try:
            image, info = read_image(path)
            if min(image.shape[:2]) < 8:
                raise InputError(
                    f"{path}: image is {image.shape[1]}x{image.shape[0]}; both sides must be at least 8 px"
                )
        except MoceError as exc:
            self._finish(_error(path, out, exc, time.perf_counter() - started))
            return
        item = _Pending(path, out, image, info, started)
        if self.restorer.needs_tiling(image):
            self.flush()
            self._run_tiled(item)
            return
        if self.pending and self.pending[0].image.shape != image.shape:
            self.flush()
        self.pending.append(item)
        if len(self.pending) >= self.restorer.options.batch:
            self.flush()

    def flush(self) -> None:
        items, self.pending = self.pending, []
        if not items:
            return
        try:
            results = self.restorer.restore_batch([i.image for i in items])
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the run
            for item in items:
                self._finish(_error(item.path, item.out, exc, time.perf_counter() - item.started))
            return
        for item, result in zip(items, results):
            self._write(item, result)

    def _run_tiled(self, item: _Pending) -> None:
        try:
            self.progress.tiles(self.restorer.tile_count(item.image))
            result = self.restorer.restore_tiled(item.image, self.progress.tile_done)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
            self._finish(_error(item.path, item.out, exc, time.perf_counter() - item.started))
            return
        self._write(item, result)

    def _write(self, item: _Pending, result: ImageResult) -> None:
        try:
            write_image_atomic(
                item.out, from_rgb_float(result.restored, item.info, item.out.suffix), self.job.jpeg_quality
            )
        except (MoceError, OSError) as exc:
            self._finish(_error(item.path, item.out, exc, time.perf_counter() - item.started))
            return
        self._finish(_record(item.path, item.out, result, time.perf_counter() - item.started))

    def _finish(self, record: ImageRecord) -> None:
        self.records.append(record)
        self.progress.image_done(Path(record.input), record.status)


def _todo(job: RestoreJob, root: Path, files: list[Path]) -> Iterator[tuple[Path, Path] | tuple[Path, None]]:
    for path in files:
        out = output_path(job, root, path)
        yield (path, None) if out.exists() and not job.overwrite else (path, out)


def write_report(path: Path, summary: RestoreSummary) -> None:
    write_bytes_atomic(path, json.dumps(summary.to_dict(), indent=2).encode())


def restore(job: RestoreJob, progress: Progress | None = None) -> RestoreSummary:
    """Restore every image of ``job``; problems with single images never stop the run."""
    progress = progress or NoProgress()
    start = time.perf_counter()
    _check_paths(job)
    root, files = discover(job.inputs, job.recursive, job.include)
    manifest = resolve_model(job.model, progress.message)
    choice = make_runner(job.backend, manifest, job.device, job.threads, job.precision)
    progress.message(f"backend: {choice.name} ({choice.reason})")
    options = job.options
    if job.precision != "fp32" and options.tile_passes > 1:
        progress.message(f"tile passes: 1 (image-wide sums run in the fp32 tile graphs only, not at {job.precision})")
        options = replace(options, tile_passes=1)  # the caller's options stay as given
    skipped: list[str] = []
    loop: _Loop | None = None
    try:
        with choice.runner as runner:
            restorer = Restorer(PlanExecutor(manifest, runner), options)
            loop = _Loop(job, restorer, progress)
            progress.start(len(files))
            for path, out in _todo(job, root, files):
                if out is None:
                    skipped.append(str(path))
                    progress.image_done(path, "skipped")
                    continue
                loop.add(path, out)
            loop.flush()
    finally:
        summary = RestoreSummary(
            choice.name,
            choice.reason,
            job.precision,
            options.routing,
            loop.records if loop else [],
            skipped,
            time.perf_counter() - start,
            {
                "tile": options.tile,
                "overlap": options.overlap,
                "route_per": options.route_per,
                "passes": options.passes(),
            },
        )
        if job.report:
            write_report(job.report, summary)
    return summary
