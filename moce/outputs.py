"""The one output guard: every path a command will write, checked before any work.

The rule, for every command and the API: moce writes a file or folder only where nothing is, or
where moce itself wrote what is there, and never onto or inside what the same command reads (its
inputs, the model package, the checkpoint). Whether moce wrote something is known, not guessed:
a JSON result carries ``"written_by": "moce <command>"``, a PNG chart carries it as its
``Software`` text chunk, and a folder moce owns (a training run, a demo folder, a Triton model
folder, an unpacked server) holds a :data:`MARKER` file saying so. A model package carries its
manifest, and :mod:`moce.package.writer` keeps its own rule for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moce.errors import InputError, one_line
from moce.files import write_json_atomic

SIGNATURE_KEY = "written_by"
"""The key of a JSON result (and the text of a folder's marker) that names the moce command that
wrote it."""

MARKER = ".moce"
"""The file inside a folder moce owns: JSON with :data:`SIGNATURE_KEY`."""

PNG_SIGNATURE_KEY = b"Software"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_STDOUT = "-"


class OutputError(InputError):
    """A path a command would write is an input, lies inside what it reads, or holds what moce did
    not write."""


@dataclass(frozen=True)
class Planned:
    """One path a command will write: ``option`` names it in messages (``--json``), ``signature``
    (``moce bench``) is what the written file or folder will carry, and the only signature an
    existing one may carry for moce to replace it."""

    path: Path | None  # None: the option was not given
    option: str
    signature: str
    folder: bool = False
    suffix: str | None = None  # the one file type this option writes (".png" for a chart)


def signed(data: dict[str, Any], signature: str) -> dict[str, Any]:
    """``data`` with ``signature`` first under :data:`SIGNATURE_KEY`."""
    return {SIGNATURE_KEY: signature, **{k: v for k, v in data.items() if k != SIGNATURE_KEY}}


def png_text(signature: str) -> bytes:
    """The payload of a PNG ``tEXt`` chunk ``Software: signature`` (the image writer makes the chunk)."""
    return PNG_SIGNATURE_KEY + b"\0" + signature.encode("latin-1")


def mark_folder(folder: Path, signature: str) -> None:
    """Write ``folder``'s :data:`MARKER`: from now on moce may replace what it wrote there."""
    write_json_atomic(folder / MARKER, {SIGNATURE_KEY: signature})


def signature_of(path: Path) -> str | None:
    """The moce command that wrote ``path`` (a JSON result, a PNG chart or a marked folder), or
    None where nothing says moce wrote it."""
    try:
        if path.is_dir():
            return _json_signature(path / MARKER)
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return _png_signature(path) if head == _PNG_MAGIC else _json_signature(path)


def _json_signature(path: Path) -> str | None:
    try:
        if path.stat().st_size > 64 << 20:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    value = data.get(SIGNATURE_KEY) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _png_signature(path: Path) -> str | None:
    """The ``Software`` text of a PNG, read from the chunks before its image data."""
    with path.open("rb") as fh:
        fh.read(8)
        for _ in range(64):
            head = fh.read(8)
            if len(head) < 8 or head[4:] in (b"IDAT", b"IEND"):
                return None
            size = int.from_bytes(head[:4], "big")
            body = fh.read(size + 4)[:size]
            if head[4:] == b"tEXt" and body.startswith(PNG_SIGNATURE_KEY + b"\0"):
                return body[len(PNG_SIGNATURE_KEY) + 1 :].decode("latin-1")
    return None


def check_writes(
    planned: Iterable[Planned | None], reads: Iterable[Path | str | None] = (), existing: bool = True
) -> None:
    """Refuse, before any work, every planned path that would lose something: one that is or lies
    inside what the command reads, one that two options share, a file where a folder goes (or the
    other way), and an existing file or folder that moce did not write as this command.
    ``-`` (standard output) and None are not paths and pass. ``existing`` False leaves what is
    already there to the caller's own rule (the package writer's)."""
    sources = [_absolute(Path(r)) for r in reads if r is not None and str(r) and Path(r).exists()]
    seen: dict[Path, str] = {}
    for plan in planned:
        if plan is None or plan.path is None or str(plan.path) == _STDOUT:
            continue
        target = _absolute(plan.path)
        if target in seen:
            _refuse(plan, f"is also given to {seen[target]}; give each its own path")
        seen[target] = plan.option
        if plan.suffix and plan.path.suffix.lower() != plan.suffix:
            _refuse(plan, f"writes a {plan.suffix} file; give a name ending in {plan.suffix}")
        _check_against_reads(plan, target, sources)
        if existing:
            _check_existing(plan, target)


def check_write(plan: Planned, reads: Sequence[Path | str | None] = ()) -> None:
    """:func:`check_writes` for one path (the API's writers call it on what they are given)."""
    check_writes([plan], reads)


def _absolute(path: Path) -> Path:
    """``path`` made absolute with its links resolved (what exists of it), so that two spellings of
    one file compare equal."""
    return Path(os.path.realpath(path.expanduser()))


def _check_against_reads(plan: Planned, target: Path, sources: list[Path]) -> None:
    for source in sources:
        if target == source:
            _refuse(plan, "is an input of this command; moce never writes over what it reads")
        if source.is_dir() and target.is_relative_to(source):
            _refuse(plan, f"lies inside {source}, which this command reads; write it elsewhere")
        if plan.folder and source.is_relative_to(target) and signature_of(target) != plan.signature:
            _refuse(plan, f"holds {source}, which this command reads; write it elsewhere")


def _check_existing(plan: Planned, target: Path) -> None:
    if not target.exists():
        ancestor = next((p for p in target.parents if p.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            _refuse(plan, f"cannot be created: {ancestor} is a file")
        return
    if plan.folder and not target.is_dir():
        _refuse(plan, "exists and is not a folder; choose another path")
    if not plan.folder and target.is_dir():
        _refuse(plan, "is a folder; give a file name")
    if plan.folder and not any(target.iterdir()):
        return
    found = signature_of(target)
    if found != plan.signature:
        whose = f"was written by `{found}`" if found else "was not written by moce"
        what = "holds files that moce did not write" if plan.folder and not found else f"exists and {whose}"
        _refuse(plan, f"{what}; moce replaces only what `{plan.signature}` wrote, so choose another path")


def _refuse(plan: Planned, why: str) -> None:
    raise OutputError(one_line(f"{plan.path}: {plan.option} {why}"))
