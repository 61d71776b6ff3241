"""Which files a job restores (images and clips) and where each one's output goes: inputs name
their outputs as ``cp -r`` does, every other entry seen is passed over with the reason."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path

from moce.apps.job import RestoreJob
from moce.apps.report import UNREADABLE_FOLDER
from moce.errors import InputError, one_line
from moce.imageio import SUPPORTED
from moce.videoio import is_video

NOT_ENTERED = "sub-folder not entered (-r/--recursive restores sub-folders)"


Listing = tuple[Path, list[Path], list[tuple[Path, str]]]
"""What :func:`discover` finds: the root, the images to restore, the files passed over with why."""


Pairs = list[tuple[Path, Path]]
"""Images and clips to restore with their outputs, in input order."""


def why_not(path: Path, root: Path, include: tuple[str, ...], regular: bool | None = None) -> str | None:
    """Why a file found in the input folder is not an image or clip to restore, or None when it is
    one; ``regular``: whether it is a regular file, when known (files listed on another file system)."""
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in SUPPORTED and not is_video(path):
        return f"not an image or video type moce reads ({path.suffix or 'no extension'})"
    if not (path.is_file() if regular is None else regular):
        return "not a regular file"
    relative = path.relative_to(root).as_posix()
    if include and not any(fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(path.name, g) for g in include):
        return "not matched by --include"
    return None


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
    """Where ``source`` is restored to: its path under the output folder, in ``--ext``'s format
    (images; a clip keeps its container)."""
    suffix = f".{job.ext.lstrip('.')}" if job.ext and not is_video(source) else source.suffix
    return (job.output / source.relative_to(root)).with_suffix(suffix)
