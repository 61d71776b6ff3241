"""What a restore job refuses before any work, and which outputs it will write: nothing that
would lose a file or a result goes ahead."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from moce.apps.discovery import Pairs
from moce.apps.job import RestoreJob, names_a_file
from moce.apps.report import OUTPUT_EXISTS, SIGNATURE, ImageRecord, error_record, skipped_record
from moce.apps.session_options import check_options
from moce.apps.shots import check_route_per
from moce.apps.video import encoding_for, read_clip
from moce.errors import InputError, one_line
from moce.files import remove_stale_temporaries
from moce.image_headers import header_size, header_storage
from moce.imageio import SUPPORTED, conversion_loss
from moce.outputs import Planned, check_write
from moce.runtime.tile_plan import AUTO
from moce.videoio import Encoding, VideoInfo, is_video


def check_paths(job: RestoreJob) -> None:
    if job.ext and f".{job.ext.lstrip('.').lower()}" not in SUPPORTED:
        raise InputError(f"--ext {job.ext}: unsupported; choose from {', '.join(s.lstrip('.') for s in SUPPORTED)}")
    if len(job.sources) > 1 and names_a_file(job.output) and not job.output.is_dir():
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
    """Refuse, before any work, a report path whose folder cannot be written to (the output guard,
    run first, has refused a folder, a path under a file and a file moce did not write)."""
    parent = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: --report cannot be written: no permission to write in {parent}")
    try:  # permissions are not the whole story (a read-only mount, /proc): try it
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".moce-report-check."):
            pass
    except OSError as exc:
        raise InputError(f"{path}: --report cannot be written in {parent} ({exc.strerror or exc})") from None


def check_outputs(job: RestoreJob, pairs: Pairs, header: Callable[[Path], bytes]) -> None:
    """Refuse before work what would lose a file or a result: an output folder that is a file, an
    output that is its own input, a clip named as an image or the other way, two inputs restored
    into one output (``--ext``, or two inputs of one name), and an output format that cannot hold
    an input's depth or alpha (unless ``allow_lossy``)."""
    if not job.to_one_file and job.output.exists() and not job.output.is_dir():
        raise InputError(f"{job.output}: is a file, not a folder; name a folder for the restored images")
    by_output: dict[Path, list[Path]] = {}
    inputs = {path.resolve() for path, _ in pairs}
    report = job.report.resolve() if job.report is not None else None
    for path, out in pairs:
        where = out.resolve()
        if where == path.resolve():
            raise InputError(f"{out}: would be restored into itself, replacing the photo; choose another output")
        if where in inputs:
            raise InputError(
                f"{out}: the output of {path} is also an input of this run (--overwrite or not, moce never "
                "writes over an input); choose another output"
            )
        if where == report:
            raise InputError(f"{job.report}: --report is also the output of {path}; give the report its own name")
        if is_video(path) != is_video(out):
            what = "a clip; name a video file (.mp4, .mkv, ...)" if is_video(path) else "an image; name an image file"
            raise InputError(f"{out}: {path} is {what} or a folder")
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
        if is_video(path):
            continue  # a clip keeps its codec's depth (the encoder's pixel format, moce.videoio)
        suffix = out.suffix
        storage = header_storage(header(path)) if suffix.lower() != path.suffix.lower() else None
        loss = storage and conversion_loss(*storage, suffix)
        if loss:
            raise InputError(f"{path}: restored as {suffix}, {loss}; pass --allow-lossy to convert anyway")


def remove_temporaries(job: RestoreJob) -> list[Path]:
    """Temporaries of an earlier, killed run: under the output folder, or beside a single output file."""
    if job.to_one_file:
        return remove_stale_temporaries(job.output.parent, recursive=False, name=job.output.name)
    return remove_stale_temporaries(job.output)


def read_head(path: Path) -> bytes:
    """The first MiB of a file: where image headers are (b"" when it cannot be read now)."""
    try:
        with path.open("rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return b""  # reported when the image is read


def check_tile_free(job: RestoreJob, files: list[Path]) -> None:
    """Tiles run the split plan only: with another routing form, refuse before work any image whose
    header says it is larger than the tile (``--tile auto``: an image over the budget fails alone)."""
    if job.session.routing == "split" or job.session.tile == AUTO:
        return
    for path in files:
        size = header_size(read_head(path))
        if size and max(size) > job.session.tile:
            raise InputError(
                f"{one_line(str(path))}: {size[0]}x{size[1]} needs tiles (--tile {job.session.tile}), which run "
                f"the split plan only; use --routing split or a larger --tile"
            )


def outputs_to_write(job: RestoreJob, pairs: Pairs) -> tuple[Pairs, list[ImageRecord]]:
    """``(input, output)`` pairs to restore, and the records of the others: an existing output is
    skipped (or redone with --overwrite); an output path taken by a folder or another non-file is an error."""
    todo, records = [], []
    for path, out in pairs:
        if out.is_symlink() or (out.exists() and not out.is_file()):
            records.append(error_record(path, out, InputError(f"{out}: the output path is taken by a non-file"), 0.0))
        elif out.exists() and not job.overwrite:
            records.append(skipped_record(path, OUTPUT_EXISTS, out))
        else:
            todo.append((path, out))
    return todo, records


Checked = dict[Path, tuple[VideoInfo, Encoding] | InputError]
"""Every clip of a job with what it holds and how it will be encoded, or why it cannot be read:
read before work."""


def check_videos(job: RestoreJob, pairs: Pairs) -> Checked:
    """Every clip read before any work. A clip that cannot be read (no video stream, a codec this
    FFmpeg cannot decode, a file cut short before its index) gets its error, and the others go on;
    the run is refused when the encoder asked for is missing or its container cannot hold it."""
    checked: Checked = {}
    clips = [(path, out) for path, out in pairs if is_video(path)]
    if clips:
        check_route_per(job.video.route_per, job.session.routing)
    for path, out in clips:
        try:
            info = read_clip(path, job.session.max_pixels)
        except InputError as exc:
            checked[path] = exc
            continue
        checked[path] = info, encoding_for(info, out, job.video)
    return checked
