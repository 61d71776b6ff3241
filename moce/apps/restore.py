"""`moce restore`: restore files or folders of images, resumably, with a report.

Inputs name their outputs as ``cp -r`` does: one input folder's images land in the output folder
under their relative paths; with several inputs, each lands under its own name (``a.png`` as
``OUT/a.png``, folder ``shots`` as ``OUT/shots/...``).

Every image is independent: one that cannot be read or written is reported with its path and
reason and the others go on. Every file seen in the input is accounted for in the report (ok,
skipped with the reason, or error with the message). Outputs are written atomically, existing
ones are skipped and temporaries of a killed run are removed at start, so an interrupted run
resumes where it stopped with the same outputs. Memory does not grow with the number of inputs:
at most ``--batch`` decoded images are held, each bounded by ``--max-pixels``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moce.apps.session import Batcher, Session, SessionOptions, check_options, write_restored
from moce.errors import InputError, MoceError, one_line
from moce.files import remove_stale_temporaries, write_bytes_atomic
from moce.imageio import (
    SUPPORTED,
    ImageInfo,
    conversion_loss,
    header_size,
    header_storage,
    storage_of,
)
from moce.outputs import Planned, check_write, signed
from moce.package.manifest import Manifest
from moce.progress import NoProgress, Progress
from moce.runtime.resolve import open_model
from moce.runtime.restorer import ImageResult
from moce.runtime.tile_plan import AUTO


@dataclass
class RestoreJob:
    """What ``moce restore`` does: which files, into where, with which model and how (``session``)."""

    inputs: Path | tuple[Path, ...]  # one file or folder, or several (a shell glob), as cp takes them
    output: Path
    model: str | Path | None = None
    session: SessionOptions = field(default_factory=SessionOptions)  # backend, precision, tiling, threads
    recursive: bool = False
    include: tuple[str, ...] = ()
    ext: str | None = None
    overwrite: bool = False
    allow_lossy: bool = False  # --ext into a format that cannot hold the input's depth or alpha
    report: Path | None = None
    quality: int | None = None  # JPEG / lossy WebP; None: the input's
    filesystem: Any = None  # pyarrow file system holding ``inputs`` (--cluster); None: the local one

    @property
    def sources(self) -> tuple[Path, ...]:
        """The inputs as given, each once."""
        given = (self.inputs,) if isinstance(self.inputs, Path) else tuple(self.inputs)
        return tuple(dict.fromkeys(given))

    @property
    def to_one_file(self) -> bool:
        """One input file restored into an output named like an image (``a.png b.jpg``)."""
        (first, *more) = self.sources
        return not more and first.is_file() and self.output.suffix.lower() in SUPPORTED


@dataclass
class ImageRecord:
    input: str
    output: str | None
    status: str  # "ok" | "error" | "skipped" | "not_processed"
    error: str | None
    seconds: float
    routes: list[Any] | None = None
    gates: list[Any] | None = None
    margins: list[float] | None = None
    tiles: int = 0
    expert_flops: float = 0.0
    dense_expert_flops: float = 0.0
    reason: str | None = None  # why a file was skipped
    tiling: dict[str, Any] | None = None  # tiled images: the tile chosen, passes, the memory estimate and why


def skipped_record(path: Path, reason: str, out: Path | None = None) -> ImageRecord:
    """The report record of a file seen and passed over, with the reason."""
    return ImageRecord(str(path), str(out) if out else None, "skipped", None, 0.0, reason=reason)


SIGNATURE = "moce restore"
"""What a report carries (:mod:`moce.outputs`): a rerun replaces its own report and no other file."""
OUTPUT_EXISTS = "output exists (--overwrite redoes it)"
UNREADABLE_FOLDER = "folder cannot be read, so its images were not restored"
NOT_ENTERED = "sub-folder not entered (-r/--recursive restores sub-folders)"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that end a run honestly: in-flight images finished, the report written, exit 128 + signal."""


NOT_PROCESSED = "not_processed"
"""The status of a file an interrupted run did not reach."""
INTERRUPTED = "the run was interrupted before this file; rerun the same command to resume"


def not_processed(path: Path, out: Path) -> ImageRecord:
    """The record of an image an interrupted run did not reach."""
    return ImageRecord(str(path), str(out), NOT_PROCESSED, None, 0.0, reason=INTERRUPTED)


class StopRequest:
    """A request to end a run early, made by a signal: the images in flight are finished and
    written, every file not reached is reported as ``not_processed``, and the run says so.

    A second signal stops the process at once (temporaries are removed at the next start)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._signals: tuple[int, ...] = ()  # the signals routed here now (see on_signals)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __call__(self, signum: int, frame: object = None) -> None:
        if self.signum is not None:
            os.write(2, b"moce: second signal; stopping at once\n")
            os._exit(128 + signum)
        self.signum = signum

    @contextmanager
    def on_signals(self, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
        """Route ``signals`` here while the block runs (main thread only; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in signals}
        self._signals = signals
        try:
            yield self
        finally:
            self._signals = ()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def reclaim(self) -> None:
        """Route the signals here again after a library took them (``ray.init`` sets its own SIGTERM
        handler, which exits at once); nothing happens outside :meth:`on_signals`."""
        for s in self._signals:
            signal.signal(s, self)


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
        return [r for r in self.records if r.status == "error"]

    @property
    def restored(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == "ok"]

    @property
    def skipped(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == "skipped"]

    @property
    def expert_compute_skipped(self) -> float:
        dense = sum(r.dense_expert_flops for r in self.restored)
        return 1.0 - sum(r.expert_flops for r in self.restored) / dense if dense else 0.0

    @property
    def not_processed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == NOT_PROCESSED]

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
                "seconds": round(self.seconds, 3),
                "setup_seconds": round(self.setup_seconds, 3),
                "restore_seconds": round(self.restore_seconds, 3),
                "images_per_second": len(self.restored) / self.restore_seconds if self.restore_seconds else 0.0,
                "expert_compute_skipped": self.expert_compute_skipped,
            },
            "images": [vars(r) for r in self.records],
            "skipped": [r.input for r in self.skipped if r.reason == OUTPUT_EXISTS],
        }


def passed_record(path: Path, reason: str, out: Path | None = None) -> ImageRecord:
    """The record of an entry passed over: skipped with the reason, or an error for a folder that
    could not be read (its images are missing from the run, which must not look complete)."""
    if reason.startswith(UNREADABLE_FOLDER):
        return ImageRecord(str(path), None, "error", one_line(f"{path}: {reason}"), 0.0)
    return skipped_record(path, reason, out)


def why_not(path: Path, root: Path, include: tuple[str, ...], regular: bool | None = None) -> str | None:
    """Why a file found in the input folder is not an image to restore, or None when it is one;
    ``regular``: whether it is a regular file, when known (files listed on another file system)."""
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in SUPPORTED:
        return f"not an image type moce reads ({path.suffix or 'no extension'})"
    if not (path.is_file() if regular is None else regular):
        return "not a regular file"
    relative = path.relative_to(root).as_posix()
    if include and not any(fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(path.name, g) for g in include):
        return "not matched by --include"
    return None


Listing = tuple[Path, list[Path], list[tuple[Path, str]]]
"""What :func:`discover` finds: the root, the images to restore, the files passed over with why."""

Pairs = list[tuple[Path, Path]]
"""Images to restore with their outputs, in input order."""


def discover_inputs(
    job: RestoreJob, listed: Callable[[Path], Listing] | None = None
) -> tuple[Pairs, list[tuple[Path, str]]]:
    """Every input's images paired with their outputs, and the files passed over with why.
    ``listed``: how one input is listed (by default :func:`discover`; elsewhere, another file system)."""
    if job.to_one_file:
        return [(job.sources[0], job.output)], []
    listed = listed or (lambda where: discover(where, job.recursive, job.include))
    sources = job.sources
    pairs: Pairs = []
    passed: list[tuple[Path, str]] = []
    for source in sources:
        root, files, skipped = listed(source)
        root = root if len(sources) == 1 else source.parent  # several inputs: each under its own name
        pairs += [(path, output_path(job, root, path)) for path in files]
        passed += skipped
    if not pairs:
        raise InputError(no_images(job.sources, passed))
    return pairs, passed


def no_images(sources: tuple[Path, ...], passed: list[tuple[Path, str]]) -> str:
    """The one line of a run with nothing to restore: which inputs, and what was passed over."""
    where = one_line(", ".join(map(str, sources)))
    folders = [path for path, reason in passed if reason == NOT_ENTERED]
    if folders:
        return f"{where}: no images here; {len(folders)} sub-folder(s) not entered ({folders[0].name}, ...): add -r"
    if passed:
        path, reason = passed[0]
        return one_line(f"{where}: no images ({len(passed)} file(s) passed over; {path.name}: {reason})")
    return f"{where}: no images (an empty folder)"


def discover(inputs: Path, recursive: bool, include: tuple[str, ...]) -> Listing:
    """The root that output paths are relative to, the image files to process (sorted), and every
    other file seen in the input with the reason it is passed over."""
    if not inputs.exists():
        raise InputError(f"{one_line(str(inputs))}: no such file or folder")
    if inputs.is_file():
        return inputs.parent, [inputs], []
    if not inputs.is_dir():
        raise InputError(f"{one_line(str(inputs))}: not a regular file or a folder")
    entries, passed = _entries(inputs, recursive)
    files = []
    for path in entries:
        reason = why_not(path, inputs, include)
        (passed.append((path, reason)) if reason else files.append(path))
    return inputs, files, sorted(passed)


def _entries(inputs: Path, recursive: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every non-folder entry under ``inputs`` (symlinks to folders included, not followed), sorted,
    and the folders passed over: those that could not be read (:data:`UNREADABLE_FOLDER` and why)
    and, without ``recursive``, the sub-folders not entered (:data:`NOT_ENTERED`)."""
    unreadable: list[tuple[Path, str]] = []

    def failed(exc: OSError) -> None:
        unreadable.append((Path(exc.filename or inputs), f"{UNREADABLE_FOLDER} ({exc.strerror or exc})"))

    entries: list[Path] = []
    for folder, dirs, names in os.walk(inputs, onerror=failed):
        here = Path(folder)
        entries += [here / name for name in names]
        entries += [here / name for name in dirs if (here / name).is_symlink()]
        if not recursive:
            unreadable += [(here / n, NOT_ENTERED) for n in dirs if not (here / n).is_symlink() and n[:1] != "."]
            dirs.clear()
    return sorted(entries), unreadable


def output_path(job: RestoreJob, root: Path, source: Path) -> Path:
    suffix = f".{job.ext.lstrip('.')}" if job.ext else source.suffix
    return (job.output / source.relative_to(root)).with_suffix(suffix)


def _check_paths(job: RestoreJob) -> None:
    if job.ext and f".{job.ext.lstrip('.').lower()}" not in SUPPORTED:
        raise InputError(f"--ext {job.ext}: unsupported; choose from {', '.join(s.lstrip('.') for s in SUPPORTED)}")
    if len(job.sources) > 1 and job.output.suffix.lower() in SUPPORTED and not job.output.is_dir():
        raise InputError(f"{job.output}: {len(job.sources)} inputs are restored into a folder; name a folder")
    for source in job.sources:
        if source.is_dir():
            inp, out = source.resolve(), job.output.resolve()
            if out == inp or inp in out.parents:
                raise InputError(f"{job.output}: the output folder is inside the input tree {source}; choose another")
    check_options(job.session)
    if job.report is not None:
        check_write(Planned(job.report, "--report", SIGNATURE), [*job.sources, job.model])
        check_report_path(job.report)


def check_report_path(path: Path) -> None:
    """Refuse, before any work, a report path that cannot be written: a folder, or under a file."""
    if path.is_dir():
        raise InputError(f"{path}: --report names a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{path}: --report cannot be written: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: --report cannot be written: no permission to write in {parent}")
    try:  # permissions are not the whole story (a read-only mount, /proc): try it
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".moce-report-check."):
            pass
    except OSError as exc:
        raise InputError(f"{path}: --report cannot be written in {parent} ({exc.strerror or exc})") from None


def check_outputs(job: RestoreJob, pairs: Pairs, header: Callable[[Path], bytes]) -> None:
    """Refuse before work what would lose a file or a result: an output folder that is a file, an
    output that is its own input, two inputs restored into one output (``--ext``, or two inputs of
    one name), and an output format that cannot hold an input's depth or alpha (unless ``allow_lossy``)."""
    if not job.to_one_file and job.output.exists() and not job.output.is_dir():
        raise InputError(f"{job.output}: is a file, not a folder; name a folder for the restored images")
    by_output: dict[Path, list[Path]] = {}
    inputs = {path.resolve(): path for path, _ in pairs}
    for path, out in pairs:
        if out.resolve() == path.resolve():
            raise InputError(f"{out}: would be restored into itself, replacing the photo; choose another output")
        if out.resolve() in inputs:
            raise InputError(
                f"{out}: the output of {path} is also an input of this run (--overwrite or not, moce never "
                "writes over an input); choose another output"
            )
        if job.report is not None and out.resolve() == job.report.resolve():
            raise InputError(f"{job.report}: --report is also the output of {path}; give the report its own name")
        by_output.setdefault(out, []).append(path)
    clashes = [(out, paths) for out, paths in by_output.items() if len(paths) > 1]
    if clashes:
        out, paths = clashes[0]
        more = f" (and {len(clashes) - 1} more output(s) like it)" if len(clashes) > 1 else ""
        raise InputError(
            f"{out}: {paths[0]} and {paths[1]} would both be restored into it{more}; "
            "keep the inputs' formats (no --ext) or restore them into separate folders"
        )
    if job.allow_lossy:
        return
    for path, out in pairs:
        suffix = out.suffix
        storage = header_storage(header(path)) if suffix.lower() != path.suffix.lower() else None
        loss = storage and conversion_loss(*storage, suffix)
        if loss:
            raise InputError(f"{path}: restored as {suffix}, {loss}; pass --allow-lossy to convert anyway")


def _remove_stale_temporaries(job: RestoreJob) -> list[Path]:
    """Temporaries of an earlier, killed run: under the output folder, or beside a single output file."""
    if job.to_one_file:
        return remove_stale_temporaries(job.output.parent, recursive=False, name=job.output.name)
    return remove_stale_temporaries(job.output)


def _head(path: Path) -> bytes:
    """The first MiB of a file: where image headers are (b"" when it cannot be read now)."""
    try:
        with path.open("rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return b""  # reported when the image is read


def _check_tile_free(job: RestoreJob, files: list[Path]) -> None:
    """Tiles run the split plan only: with another routing form, refuse before work any image whose
    header says it is larger than the tile (``--tile auto``: an image over the budget fails alone)."""
    if job.session.routing == "split" or job.session.tile == AUTO:
        return
    for path in files:
        size = header_size(_head(path))
        if size and max(size) > job.session.tile:
            raise InputError(
                f"{one_line(str(path))}: {size[0]}x{size[1]} needs tiles (--tile {job.session.tile}), which run "
                f"the split plan only; use --routing split or a larger --tile"
            )


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
        tiling=result.plan.to_dict() if result.plan is not None else None,
    )


def _error(path: Path, out: Path | None, exc: BaseException, seconds: float) -> ImageRecord:
    message = str(exc) if isinstance(exc, MoceError) else f"{path}: {type(exc).__name__}: {exc}"
    if str(path) not in message:  # every error line names its file
        message = f"{path}: {message}"
    return ImageRecord(str(path), str(out) if out else None, "error", one_line(message), round(seconds, 4))


@dataclass
class _Pending:
    path: Path
    out: Path
    info: ImageInfo
    started: float


class ImageLoop:
    """The per-image loop: read, restore through the session's :class:`Batcher`, write."""

    def __init__(self, job: RestoreJob, session: Session, progress: Progress, stop: StopRequest | None = None) -> None:
        self.job, self.session, self.progress = job, session, progress
        self.stop = stop or StopRequest()
        self.records: list[ImageRecord] = []
        self.batcher: Batcher[_Pending] = Batcher(session, self._done, progress.tiles, progress.tile_done)

    def add(self, path: Path, out: Path, data: bytes | None = None) -> None:
        """Restore ``path`` (or its bytes ``data``, read elsewhere) into ``out``, batched with its peers."""
        started = time.perf_counter()
        try:
            image, info = self.session.read(path, data)
        except MoceError as exc:
            self._finish(_error(path, out, exc, time.perf_counter() - started))
            return
        self.batcher.add(_Pending(path, out, info, started), image)

    def flush(self) -> None:
        self.batcher.flush()

    def _done(self, item: _Pending, outcome: ImageResult | Exception) -> None:
        if isinstance(outcome, Exception):
            self._finish(_error(item.path, item.out, outcome, time.perf_counter() - item.started))
            return
        try:
            loss = None if self.job.allow_lossy else conversion_loss(*storage_of(item.info), item.out.suffix)
            if loss:
                raise InputError(f"{item.path}: {loss}; pass --allow-lossy to convert anyway")
            write_restored(item.out, outcome.restored, item.info, self.job.quality)
        except (MoceError, OSError) as exc:
            self._finish(_error(item.path, item.out, exc, time.perf_counter() - item.started))
            return
        self._finish(_record(item.path, item.out, outcome, time.perf_counter() - item.started))

    def skip(self, path: Path, reason: str, out: Path | None = None) -> None:
        record = passed_record(path, reason, out)
        self.records.append(record)
        self.progress.image_done(path, record.status)

    def run(self, pairs: Pairs) -> None:
        """Restore the images whose outputs are to be written (see :func:`outputs_to_write`)."""
        todo, records = outputs_to_write(self.job, pairs)
        for record in records:
            self._finish(record)
        for n, (path, out) in enumerate(todo):
            if self.stop.requested:
                self.flush()  # the images in flight are finished and written
                self.records += [not_processed(left, left_out) for left, left_out in todo[n:]]
                return
            self.add(path, out)
        self.flush()

    def _finish(self, record: ImageRecord) -> None:
        self.records.append(record)
        self.progress.image_done(Path(record.input), record.status)


def outputs_to_write(job: RestoreJob, pairs: Pairs) -> tuple[Pairs, list[ImageRecord]]:
    """``(input, output)`` pairs to restore, and the records of the others: an existing output is
    skipped (or redone with --overwrite); an output path taken by a folder or another non-file is an error."""
    todo, records = [], []
    for path, out in pairs:
        if out.is_symlink() or (out.exists() and not out.is_file()):
            records.append(_error(path, out, InputError(f"{out}: the output path is taken by a non-file"), 0.0))
        elif out.exists() and not job.overwrite:
            records.append(skipped_record(path, OUTPUT_EXISTS, out))
        else:
            todo.append((path, out))
    return todo, records


def write_report(path: Path, summary: RestoreSummary) -> None:
    """Write the JSON report atomically; a failure (a full disk, say) is an :class:`InputError`."""
    try:
        write_bytes_atomic(path, json.dumps(signed(summary.to_dict(), SIGNATURE), indent=2).encode())
    except OSError as exc:
        raise InputError(f"{one_line(str(path))}: cannot write the report ({exc.strerror or exc})") from None


@dataclass
class Prepared:
    """A restore job checked and set up, before any image is read (shared with the cluster path)."""

    pairs: Pairs
    passed: list[tuple[Path, str]]
    session: Session

    @property
    def manifest(self) -> Manifest:
        return self.session.manifest

    @property
    def files(self) -> list[Path]:
        return [path for path, _ in self.pairs]


def prepare(
    job: RestoreJob,
    progress: Progress,
    listed: Callable[[Path], Listing] | None = None,
    session: Session | None = None,
) -> Prepared:
    """Everything a job refuses before work, the model opened and its session made (not activated).
    ``listed``: how an input is listed elsewhere (another file system); by default :func:`discover`.
    ``session``: one the caller opened (its options are the job's); by default one is opened."""
    _check_paths(job)
    pairs, passed = discover_inputs(job, listed)
    if listed is None:
        _check_tile_free(job, [path for path, _ in pairs])
        check_outputs(job, pairs, _head)
    if session is None:
        session = Session(open_model(job.model, progress.message), job.session, progress.message)
    progress.message(f"backend: {session.choice.name} ({session.choice.reason})")
    removed = _remove_stale_temporaries(job)
    if removed:
        progress.message(f"removed {len(removed)} temporary file(s) left by an interrupted run")
    return Prepared(pairs, passed, session)


def summarize(prepared: Prepared, job: RestoreJob, records: list[ImageRecord], seconds: float) -> RestoreSummary:
    options = prepared.session.restore_options
    return RestoreSummary(
        prepared.session.choice.name,
        prepared.session.choice.reason,
        job.session.precision,
        options.routing,
        records,
        seconds,
        prepared.session.tiling(),
    )


def restore(
    job: RestoreJob, progress: Progress | None = None, session: Session | None = None, stop: StopRequest | None = None
) -> RestoreSummary:
    """Restore every image of ``job``; problems with single images never stop the run.
    ``session``: an opened session to restore with (left open); by default the job opens its own.
    ``stop``: set (by a signal handler) to end the run after the images in flight."""
    progress = progress or NoProgress()
    start = time.perf_counter()
    if job.filesystem is not None:
        raise InputError(
            f"{one_line(str(job.sources[0]))}: inputs on a {job.filesystem.type_name} file system need --cluster"
        )
    stop = stop or StopRequest()
    prepared = prepare(job, progress, session=session)
    loop: ImageLoop | None = None
    setup = 0.0
    try:
        prepared.session.activate()
        setup = time.perf_counter() - start
        loop = ImageLoop(job, prepared.session, progress, stop)
        progress.start(len(prepared.files) + len(prepared.passed))
        for path, reason in prepared.passed:
            loop.skip(path, reason)
        loop.run(prepared.pairs)
    finally:
        if session is None:
            prepared.session.close()
        summary = summarize(prepared, job, loop.records if loop else [], time.perf_counter() - start)
        summary.setup_seconds, summary.interrupted = setup, stop.signum
        if job.report:
            write_report(job.report, summary)
    return summary


def restore_folder(
    session: Session,
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    recursive: bool = False,
    include: tuple[str, ...] = (),
    ext: str | None = None,
    overwrite: bool = False,
    allow_lossy: bool = False,
    report: str | Path | None = None,
    quality: int | None = None,
    progress: Progress | None = None,
) -> RestoreSummary:
    """``moce restore INPUTS... OUTPUT`` with an opened session: files or folders, every image on its
    own (a bad one is reported and the others go on), outputs written atomically, existing ones
    skipped unless ``overwrite``, ``report`` as JSON. The session stays open."""
    job = RestoreJob(
        Path(inputs) if isinstance(inputs, (str, Path)) else tuple(Path(i) for i in inputs),
        Path(output),
        model=session.manifest.root,
        session=session.options,
        recursive=recursive,
        include=tuple(include),
        ext=ext,
        overwrite=overwrite,
        allow_lossy=allow_lossy,
        report=Path(report) if report is not None else None,
        quality=quality,
    )
    return restore(job, progress, session)
