"""The report of a restore job: one record per input seen (ok, error, skipped with the reason, or
not processed), the totals, and the signed JSON file ``--report`` writes."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from moce.apps.video import VideoResult
from moce.errors import InputError, MoceError, one_line
from moce.files import write_bytes_atomic
from moce.outputs import signed
from moce.runtime.restorer import ImageResult, skipped_share


class Status(str, Enum):
    """What became of one input: a record's ``status``, written into the report as its value."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"
    NOT_PROCESSED = "not_processed"

    def __str__(self) -> str:
        return self.value


@dataclass(kw_only=True)
class ImageRecord:
    """One input's line in the report, built by keyword from what the session returned (or why
    the input was passed over)."""

    input: str
    output: str | None
    status: Status
    error: str | None = None
    seconds: float = 0.0
    routes: list[Any] | None = None
    gates: list[Any] | None = None
    margins: list[float] | None = None
    tiles: int = 0
    expert_flops: float = 0.0
    dense_expert_flops: float = 0.0
    reason: str | None = None  # why a file was skipped
    tiling: dict[str, Any] | None = None  # tiled images: the tile chosen, passes, the memory estimate and why
    frames: int | None = None  # clips: frames restored and written (an interrupted clip: those done)
    shots: list[dict[str, Any]] | None = None  # clips: each shot's frames, time range and route
    video: dict[str, Any] | None = None  # clips: what the input holds, the encoder and why, route changes

    def __post_init__(self) -> None:
        self.status = Status(self.status)  # a record read back from JSON (the cluster's workers) holds a str


SIGNATURE = "moce restore"
"""What a report carries (:mod:`moce.outputs`): a rerun replaces its own report and no other file."""


OUTPUT_EXISTS = "output exists (--overwrite redoes it)"


UNREADABLE_FOLDER = "folder cannot be read, so its images were not restored"


RESUME = "rerun the same command to resume"

INTERRUPTED = f"the run was interrupted before this file; {RESUME}"


def skipped_record(path: Path, reason: str, out: Path | None = None) -> ImageRecord:
    """The report record of a file seen and passed over, with the reason."""
    return ImageRecord(input=str(path), output=str(out) if out else None, status=Status.SKIPPED, reason=reason)


def not_processed(path: Path, out: Path) -> ImageRecord:
    """The record of an image an interrupted run did not reach."""
    return ImageRecord(input=str(path), output=str(out), status=Status.NOT_PROCESSED, reason=INTERRUPTED)


def passed_record(path: Path, reason: str, out: Path | None = None) -> ImageRecord:
    """The record of an entry passed over: skipped with the reason, or an error for a folder that
    could not be read (its images are missing from the run, which must not look complete)."""
    if reason.startswith(UNREADABLE_FOLDER):
        return ImageRecord(input=str(path), output=None, status=Status.ERROR, error=one_line(f"{path}: {reason}"))
    return skipped_record(path, reason, out)


def image_record(path: Path, out: Path, result: ImageResult, seconds: float) -> ImageRecord:
    margins = None
    gates = None
    if result.probs is not None:
        probs = [np.asarray(p) for p in result.probs]
        gates = [[float(p[e]) for e in route] for p, route in zip(probs, result.routes)]
        margins = [float(np.diff(np.sort(p)[-2:])[0]) if p.size > 1 else float(p[0]) for p in probs]
    routes: list[Any] = [r[0] if len(r) == 1 else r for r in result.routes]
    return ImageRecord(
        input=str(path),
        output=str(out),
        status=Status.OK,
        seconds=round(seconds, 4),
        routes=routes,
        gates=gates,
        margins=margins,
        tiles=result.tiles,
        expert_flops=result.expert_flops,
        dense_expert_flops=result.dense_expert_flops,
        tiling=result.plan.to_dict() if result.plan is not None else None,
    )


def video_record(path: Path, out: Path, result: VideoResult, seconds: float) -> ImageRecord:
    """The record of a restored clip: its shots (with their routes) stand for per-image routes."""
    return ImageRecord(
        input=str(path),
        output=str(out),
        status=Status.OK,
        seconds=round(seconds, 4),
        expert_flops=result.expert_flops,
        dense_expert_flops=result.dense_expert_flops,
        frames=result.frames,
        shots=[shot.to_dict() for shot in result.shots],
        video=result.describe(),
    )


def interrupted_video(path: Path, out: Path, frames: int, total: int) -> ImageRecord:
    """The record of a clip a stop request ended: nothing was written under its name."""
    of = f" of {total}" if total else ""
    return ImageRecord(
        input=str(path),
        output=str(out),
        status=Status.NOT_PROCESSED,
        reason=f"interrupted after {frames}{of} frames, nothing written; {RESUME}",
        frames=frames,
    )


def error_record(path: Path, out: Path | None, exc: BaseException, seconds: float) -> ImageRecord:
    message = str(exc) if isinstance(exc, MoceError) else f"{path}: {type(exc).__name__}: {exc}"
    if str(path) not in message:  # every error line names its file
        message = f"{path}: {message}"
    output = str(out) if out else None
    return ImageRecord(
        input=str(path), output=output, status=Status.ERROR, error=one_line(message), seconds=round(seconds, 4)
    )


@dataclass
class RestoreSummary:
    backend: str
    backend_reason: str
    precision: str
    routing: str
    records: list[ImageRecord]
    seconds: float
    tiling: dict[str, Any] = field(default_factory=dict)
    setup_seconds: float = 0.0  # opening the model (an export, the first time) and the backend
    interrupted: int | None = None  # the signal that ended the run early

    @property
    def failed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == Status.ERROR]

    @property
    def restored(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == Status.OK]

    @property
    def skipped(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == Status.SKIPPED]

    @property
    def expert_compute_skipped(self) -> float:
        run = sum(r.expert_flops for r in self.restored)
        return skipped_share(run, sum(r.dense_expert_flops for r in self.restored))

    @property
    def not_processed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == Status.NOT_PROCESSED]

    @property
    def restore_seconds(self) -> float:
        """Time spent restoring, set-up excluded."""
        return max(self.seconds - self.setup_seconds, 0.0)

    @property
    def exit_code(self) -> int:
        """128 + the signal for an interrupted run (130 for Ctrl-C), 1 if an image failed, else 0."""
        if self.interrupted is not None:
            return 128 + self.interrupted
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "interrupted": self.interrupted is not None,
            "signal": signal.Signals(self.interrupted).name if self.interrupted is not None else None,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "precision": self.precision,
            "routing": self.routing,
            "tiling": self.tiling,
            "totals": {
                "files": len(self.records),
                "images": len(self.restored) + len(self.failed),
                "ok": len(self.restored),
                "errors": len(self.failed),
                "skipped": len(self.skipped),
                "skipped_existing": sum(r.reason == OUTPUT_EXISTS for r in self.skipped),
                "not_processed": len(self.not_processed),
                "frames": sum(r.frames or 0 for r in self.records if r.status == Status.OK),
                "seconds": round(self.seconds, 3),
                "setup_seconds": round(self.setup_seconds, 3),
                "restore_seconds": round(self.restore_seconds, 3),
                "images_per_second": len(self.restored) / self.restore_seconds if self.restore_seconds else 0.0,
                "expert_compute_skipped": self.expert_compute_skipped,
            },
            "images": [vars(r) for r in self.records],
            "skipped": [r.input for r in self.skipped if r.reason == OUTPUT_EXISTS],
        }


def write_report(path: Path, summary: RestoreSummary) -> None:
    """Write the JSON report atomically; a failure (a full disk, say) is an :class:`InputError`."""
    try:
        write_bytes_atomic(path, json.dumps(signed(summary.to_dict(), SIGNATURE), indent=2).encode())
    except OSError as exc:
        raise InputError(f"{one_line(str(path))}: cannot write the report ({exc.strerror or exc})") from None
