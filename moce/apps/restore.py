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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from moce.apps.batcher import Batcher
from moce.apps.checks import (
    Checked,
    check_outputs,
    check_paths,
    check_tile_free,
    check_videos,
    outputs_to_write,
    read_head,
    remove_temporaries,
)
from moce.apps.discovery import Listing, Pairs, discover_inputs
from moce.apps.job import RestoreJob
from moce.apps.report import (
    ImageRecord,
    RestoreSummary,
    error_record,
    image_record,
    interrupted_video,
    not_processed,
    passed_record,
    video_record,
    write_report,
)
from moce.apps.session import Session, write_restored
from moce.apps.stop import StopRequest
from moce.apps.video import VideoInterrupted, restore_video
from moce.errors import InputError, MoceError, one_line
from moce.imageio import ImageInfo, conversion_loss, storage_of
from moce.package.manifest import Manifest
from moce.progress import NoProgress, Progress
from moce.runtime.resolve import open_model
from moce.runtime.restorer import ImageResult


@dataclass
class _Pending:
    path: Path
    out: Path
    info: ImageInfo
    started: float


class ImageLoop:
    """The per-image loop: read, restore through the session's :class:`Batcher`, write."""

    def __init__(
        self,
        job: RestoreJob,
        session: Session,
        progress: Progress,
        stop: StopRequest | None = None,
        videos: Checked | None = None,
    ) -> None:
        self.job, self.session, self.progress = job, session, progress
        self.stop = stop or StopRequest()
        self.videos = videos or {}
        self.records: list[ImageRecord] = []
        self.batcher: Batcher[_Pending] = Batcher(session, self._done, progress.tiles, progress.tile_done)

    def add(self, path: Path, out: Path, data: bytes | None = None) -> None:
        """Restore ``path`` (or its bytes ``data``, read elsewhere) into ``out``, batched with its peers."""
        started = time.perf_counter()
        try:
            image, info = self.session.read(path, data)
        except MoceError as exc:
            self._finish(error_record(path, out, exc, time.perf_counter() - started))
            return
        self.batcher.add(_Pending(path, out, info, started), image)

    def flush(self) -> None:
        self.batcher.flush()

    def _done(self, item: _Pending, outcome: ImageResult | Exception) -> None:
        if isinstance(outcome, Exception):
            self._finish(error_record(item.path, item.out, outcome, time.perf_counter() - item.started))
            return
        try:
            loss = None if self.job.allow_lossy else conversion_loss(*storage_of(item.info), item.out.suffix)
            if loss:
                raise InputError(f"{item.path}: {loss}; pass --allow-lossy to convert anyway")
            write_restored(item.out, outcome.restored, item.info, self.job.quality)
        except (MoceError, OSError) as exc:
            self._finish(error_record(item.path, item.out, exc, time.perf_counter() - item.started))
            return
        self._finish(image_record(item.path, item.out, outcome, time.perf_counter() - item.started))

    def skip(self, path: Path, reason: str, out: Path | None = None) -> None:
        record = passed_record(path, reason, out)
        self.records.append(record)
        self.progress.image_done(path, record.status)

    def run(self, pairs: Pairs) -> None:
        """Restore the images whose outputs are to be written (see :func:`outputs_to_write`)."""
        todo, records = outputs_to_write(self.job, pairs)
        unreadable = [(path, out) for path, out in todo if isinstance(self.videos.get(path), InputError)]
        for record in records:
            self._finish(record)
        for path, out in unreadable:  # clips known bad before work are reported first; the others go on
            self.video(path, out)
        todo = [pair for pair in todo if pair not in unreadable]
        for n, (path, out) in enumerate(todo):
            if self.stop.requested:
                self.flush()  # the images in flight are finished and written
                self.records += [not_processed(left, left_out) for left, left_out in todo[n:]]
                return
            self.take(path, out)
        self.flush()

    def take(self, path: Path, out: Path, data: bytes | None = None) -> None:
        """Restore one input of either medium: an image batched with its peers (see :meth:`add`), a
        clip whole, after the images before it are written (in input order)."""
        if path in self.videos:
            self.flush()
            self.video(path, out)
        else:
            self.add(path, out, data)

    def video(self, path: Path, out: Path) -> None:
        """Restore one clip (checked before work), its frames streamed through the same session."""
        started = time.perf_counter()
        checked = self.videos[path]
        if isinstance(checked, InputError):  # it could not be read when checked
            self._finish(error_record(path, out, checked, 0.0))
            return
        try:
            result = restore_video(
                self.session, path, out, checked, self.job.video, progress=self.progress, stop=self.stop
            )
        except VideoInterrupted as exc:
            self._finish(interrupted_video(path, out, exc.frames, checked[0].frames))
            return
        except Exception as exc:  # noqa: BLE001 - one clip failing, however, never stops the others
            self._finish(error_record(path, out, exc, time.perf_counter() - started))
            return
        self._finish(video_record(path, out, result, time.perf_counter() - started))

    def _finish(self, record: ImageRecord) -> None:
        self.records.append(record)
        self.progress.image_done(Path(record.input), record.status)


@dataclass
class Prepared:
    """A restore job checked and set up, before any image is read (shared with the cluster path)."""

    pairs: Pairs
    passed: list[tuple[Path, str]]
    session: Session
    videos: Checked

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
    check_paths(job)
    pairs, passed = discover_inputs(job, listed)
    videos: Checked = {}
    if listed is None:
        check_tile_free(job, [path for path, _ in pairs])
        check_outputs(job, pairs, read_head)
        videos = check_videos(job, pairs)
    if session is None:
        session = Session(open_model(job.model, progress.message), job.session, progress.message)
    progress.message(f"backend: {session.choice.name} ({session.choice.reason})")
    removed = remove_temporaries(job)
    if removed:
        progress.message(f"removed {len(removed)} temporary file(s) left by an interrupted run")
    return Prepared(pairs, passed, session, videos)


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
        loop = ImageLoop(job, prepared.session, progress, stop, prepared.videos)
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
