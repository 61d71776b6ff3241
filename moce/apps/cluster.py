"""`moce restore --cluster`: the same restore on a Ray cluster, through Ray Data.

The driver checks the job, resolves the model and lists the work exactly as a local restore does
(:func:`moce.apps.restore.prepare`); Ray Data reads the files as bytes and hands them to actors of
:class:`ImageWorker`, one model and runner each, which decode with moce's own image I/O, restore
with the same code as a local run and write each output atomically under its relative name. The
driver merges their records into the same report. :func:`restore_dataset` is the step in between,
for users composing it with their own Ray pipelines.

Inputs given as a URI (``s3://``, ``gs://``, ``file://``: any pyarrow file system) are listed with
pyarrow and read by Ray Data as bytes; local inputs are read by the workers themselves. Workers
read the package and write the outputs by path, so on a multi-machine cluster both (and local
inputs) must be on storage every node mounts at the same path.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from moce._lazy import require
from moce.apps.checks import Checked, outputs_to_write
from moce.apps.discovery import NOT_ENTERED, Listing, Pairs, why_not
from moce.apps.job import RestoreJob
from moce.apps.report import ImageRecord, RestoreSummary, not_processed, passed_record, write_report
from moce.apps.restore import ImageLoop, Prepared, prepare, summarize
from moce.apps.session import Session
from moce.apps.stop import StopRequest
from moce.errors import InputError, one_line
from moce.package.store import cache_dir
from moce.progress import NoProgress, Progress
from moce.runtime.resolve import open_model
from moce.videoio import is_video

RAY_HINT = "'ray[data]'"


def local_path(where: str | Path) -> Path:
    """A local path, or the path of a ``file://`` URI (other file systems: inputs of --cluster only)."""
    text = str(where)
    if "://" not in text:
        return Path(text)
    parsed = urlparse(text)
    if parsed.scheme != "file":
        raise InputError(
            f"{one_line(text)}: outputs, and inputs without --cluster, are local paths or file:// URIs; "
            "--cluster reads inputs from any pyarrow file system URI (s3://, gs://, ...)"
        )
    return Path(parsed.path)


def input_location(where: str) -> tuple[Any, Path]:
    """``(pyarrow file system, path on it)`` of a URI (``file://``, ``s3://``, ``gs://``, ...), or
    ``(None, path)`` for a local path, which workers read themselves."""
    if "://" not in where:
        return None, Path(where)
    fs = require("pyarrow.fs", RAY_HINT)
    try:
        filesystem, path = fs.FileSystem.from_uri(where)
    except (ValueError, OSError) as exc:
        raise InputError(f"{one_line(where)}: not a file system URI pyarrow reads ({one_line(str(exc))})") from None
    return filesystem, Path(path)


def locations(inputs: list[str], cluster: bool) -> tuple[Any, tuple[Path, ...]]:
    """The file system holding ``inputs`` (None: the local one) and their paths on it. Inputs are
    local paths; with a cluster, a single input may be a URI on any pyarrow file system."""
    if cluster and len(inputs) == 1:
        filesystem, path = input_location(inputs[0])
        return filesystem, (path,)
    remote = next((i for i in inputs if "://" in i and not i.startswith("file://")), None)
    if cluster and remote is not None:
        raise InputError(f"{one_line(remote)}: several inputs are local paths; give a URI as the only input")
    return None, tuple(local_path(i) for i in inputs)


def list_inputs(filesystem: Any, inputs: Path, recursive: bool, include: tuple[str, ...]) -> Listing:
    """:func:`moce.apps.restore.discover` on a pyarrow file system."""
    fs = require("pyarrow.fs", RAY_HINT)
    try:
        info = filesystem.get_file_info(str(inputs))
        if info.type == fs.FileType.File:
            return inputs.parent, [inputs], []
        if info.type != fs.FileType.Directory:
            raise InputError(f"{one_line(str(inputs))}: no such file or folder on {filesystem.type_name}")
        entries = filesystem.get_file_info(fs.FileSelector(str(inputs), recursive=recursive))
    except OSError as exc:
        raise InputError(f"{one_line(str(inputs))}: cannot list ({one_line(str(exc))})") from None
    files, passed = [], []
    for entry in sorted(entries, key=lambda e: e.path):
        path = Path(entry.path)
        if entry.type == fs.FileType.Directory:
            if not recursive and not path.name.startswith("."):
                passed.append((path, NOT_ENTERED))
            continue
        reason = why_not(path, inputs, include, regular=entry.type == fs.FileType.File)
        (passed.append((path, reason)) if reason else files.append(path))
    return inputs, files, sorted(passed)


class ImageWorker:
    """One Ray actor: the job's session opened once, then every batch of rows restored and written;
    a clip (checked by the driver, in ``videos``) is restored whole by the worker that takes it."""

    def __init__(self, job: RestoreJob, package: str, outputs: dict[str, str], videos: Checked | None = None) -> None:
        self.session = Session(open_model(package), job.session)
        self.session.activate()
        self.loop = ImageLoop(job, self.session, NoProgress(), videos=videos)
        self.outputs = outputs

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.loop.records = []
        contents = batch.get("bytes", [None] * len(batch["path"]))  # None: the worker reads the file itself
        for path, data in zip(batch["path"], contents):
            source, out = Path(str(path)), Path(self.outputs[str(path)])
            self.loop.take(source, out, None if data is None else bytes(data))
        self.loop.flush()
        return {"record": np.array([json.dumps(vars(r)) for r in self.loop.records])}


def restore_dataset(
    ds: Any, job: RestoreJob, package: str, outputs: dict[str, str], workers: int, videos: Checked | None = None
) -> Any:
    """``ds`` (rows with a ``path``, and the file's ``bytes`` where the dataset read them, as
    ``ray.data.read_binary_files(..., include_paths=True)`` gives) mapped to rows with one ``record``
    each: the JSON of the image's report record; ``outputs`` maps each path to its output; ``videos``
    are the clips among them, checked (:func:`moce.apps.checks.check_videos`). Each of ``workers``
    actors takes a GPU where the cluster has them, a CPU otherwise."""
    ray = require("ray", RAY_HINT)
    gpus = ray.cluster_resources().get("GPU", 0) >= 1
    return ds.map_batches(
        ImageWorker,
        fn_constructor_kwargs={"job": job, "package": package, "outputs": outputs, "videos": videos},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(outputs)))),  # no idle actors
        num_gpus=1 if gpus else 0,
        num_cpus=0 if gpus else 1,
    )


ADDRESS = re.compile(r"local|auto|ray://[\w.-]+:\d+|[\w.-]+:\d+")
"""``--cluster``: ``local``, ``auto``, ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT`` (a head node)."""


def check_address(address: str) -> None:
    if not ADDRESS.fullmatch(address):
        raise InputError(
            f"--cluster {address}: not a Ray address; use local (Ray on this machine), auto (the running "
            "cluster this machine belongs to) or ray://HOST:PORT"
        )


def restore_on_cluster(
    job: RestoreJob,
    address: str = "local",
    workers: int = 2,
    progress: Progress | None = None,
    stop: StopRequest | None = None,
    quiet: bool = False,
) -> RestoreSummary:
    """`moce restore --cluster ADDRESS`: ``local`` starts Ray on this machine with ``workers`` CPUs,
    ``auto`` or ``ray://HOST:PORT`` joins a running cluster. Each worker runs ``job.session.threads`` (default
    1) CPU threads. Returns the summary a local restore would, report included. ``stop`` (set by a
    signal): stop taking results; images not reported back are listed as not processed. ``quiet``:
    Ray's own lines go to :func:`ray_log_path`, not the terminal."""
    check_address(address)
    ray = require("ray", RAY_HINT)
    progress = progress or NoProgress()
    stop = stop or StopRequest()
    start = time.perf_counter()
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    job = _cluster_job(job)
    fs = job.filesystem
    listed = None if fs is None else lambda where: list_inputs(fs, where, job.recursive, job.include)
    prepared = prepare(job, progress, listed)
    clip = next((path for path in prepared.files if is_video(path)), None) if fs is not None else None
    if clip is not None:
        raise InputError(
            f"{one_line(str(clip))}: clips on a {fs.type_name} file system cannot be restored yet; "
            "copy them to local or shared storage"
        )
    todo, records = outputs_to_write(job, prepared.pairs)
    records = [passed_record(path, reason) for path, reason in prepared.passed] + records
    setup = time.perf_counter() - start
    if todo and not stop.requested:
        with ray_lines_to(ray_log_path() if quiet else None):
            if not ray.is_initialized():
                _start_ray(ray, address, workers)
                stop.reclaim()
            setup = time.perf_counter() - start
            progress.start(len(todo))
            records += _gather(ray, job, prepared, todo, workers, progress, stop)
    summary = summarize(prepared, job, _in_input_order(records, prepared.files), time.perf_counter() - start)
    summary.setup_seconds, summary.interrupted = setup, stop.signum
    if job.report:
        write_report(job.report, summary)
    return summary


def _gather(
    ray: Any, job: RestoreJob, prepared: Prepared, todo: Pairs, workers: int, progress: Progress, stop: StopRequest
) -> list[ImageRecord]:
    """The workers' records as they come back, until all are in or a stop is requested; then every
    image not reported back is recorded as not processed."""
    outputs = {str(path): str(out) for path, out in todo}
    ds = _input_dataset(ray, job, list(outputs), workers)
    records = []
    for row in restore_dataset(ds, job, str(prepared.manifest.root), outputs, workers, prepared.videos).iter_rows():
        record = ImageRecord(**json.loads(row["record"]))
        records.append(record)
        progress.image_done(Path(record.input), record.status)
        if stop.requested:
            break
    reported = {r.input for r in records}
    return records + [not_processed(path, out) for path, out in todo if str(path) not in reported]


def _input_dataset(ray: Any, job: RestoreJob, paths: list[str], workers: int) -> Any:
    """Rows of ``path`` (local inputs: each worker reads its files, on shared storage) or of ``path``
    and ``bytes`` (inputs on a pyarrow file system, read by Ray Data)."""
    blocks = min(len(paths), 64 * workers)
    if job.filesystem is None:
        return ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
    return ray.data.read_binary_files(
        paths, filesystem=job.filesystem, include_paths=True, override_num_blocks=blocks, num_cpus=0
    )


def _start_ray(ray: Any, address: str, workers: int) -> None:
    """A local Ray on the loopback address with a CPU per worker, or the cluster at ``address``."""
    if address == "local":
        ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


@contextmanager
def ray_lines_to(log: Path | None) -> Iterator[None]:
    """Ray's own lines (its C++ core's, its driver's, Ray Data's, the processes it starts) written
    to ``log`` instead of the terminal while the block runs: the process's standard error is the
    file meanwhile, since Ray writes it from native code too. None: left as they are. ``log`` is
    created here (an existing file is refused) and streamed to, so it cannot be written atomically;
    it lies in moce's cache (:func:`ray_log_path`), never where a user named."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved, python_stderr = os.dup(2), sys.stderr
    target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # a new file of moce's cache, never another's
    os.dup2(target, 2)
    sys.stderr = os.fdopen(target, "w", buffering=1)  # Python's handlers write to whatever sys.stderr is then
    try:
        yield
    finally:
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def ray_log_path() -> Path:
    """Where a quiet run writes Ray's lines: ``$MOCE_CACHE/logs/ray-<time>-<pid>.log``."""
    return cache_dir() / "logs" / f"ray-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _cluster_job(job: RestoreJob) -> RestoreJob:
    inputs = job.sources if job.filesystem is not None else tuple(local_path(p) for p in job.sources)
    session = replace(job.session, threads=job.session.threads or 1)
    return replace(job, inputs=inputs, output=local_path(job.output), session=session)


def _in_input_order(records: list[ImageRecord], files: list[Path]) -> list[ImageRecord]:
    order = {str(path): i for i, path in enumerate(files)}
    return sorted(records, key=lambda r: (r.input in order, order.get(r.input, -1)))
