"""What every command shares: turning :class:`MoceError` into a message and an exit code."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from moce.cli.progress import say
from moce.errors import InputError, MoceError
from moce.files import write_json_atomic

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Print a user-facing error as one line on stderr and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MoceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def sizes(text: str, option: str) -> tuple[tuple[int, int], ...]:
    """Image sizes as every command takes them: ``256`` (square) or ``256x192`` (height x width),
    comma-separated where several are allowed."""
    try:
        parts = [[int(v) for v in item.lower().split("x")] for item in text.split(",")]
        if any(len(p) not in (1, 2) or min(p) < 1 for p in parts):
            raise ValueError
    except ValueError:
        raise InputError(f"{option} takes sizes like 256 or 256x192, got {text}") from None
    return tuple((p[0], p[-1]) for p in parts)


def batch_sizes(text: str, option: str = "--batches") -> tuple[int, ...]:
    """Batch sizes as every command takes them: ``1,2``."""
    try:
        counts = tuple(int(b) for b in text.split(","))
        if min(counts) < 1:
            raise ValueError
    except ValueError:
        raise InputError(f"{option} takes batch sizes like 1,2, got {text}") from None
    return counts


def pixels(text: str | int) -> int:
    """A pixel count as people write it: ``64M``, ``64MP``, ``12.5M``, ``800k`` or ``1000000``."""
    if isinstance(text, int):
        return text
    value = str(text).strip().upper().removesuffix("P")
    scale = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(value[-1:], 1)
    try:
        count = float(value[:-1] if scale > 1 else value) * scale
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a pixel count (say 64M, 800k or 1000000)") from None
    return int(count)


def tile_side(text: str | int) -> int | str:
    """``--tile``: ``auto`` (from the memory budget) or a side in pixels."""
    if isinstance(text, int) or str(text).strip().lower() == "auto":
        return text if isinstance(text, int) else "auto"
    try:
        return int(str(text).strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give auto or a tile side in pixels such as 512") from None


def passes_count(text: str | int | None) -> int | None:
    """``--tile-passes``: ``auto`` (None: 1 with --tile auto, 3 with --tile N) or a count."""
    if text is None or isinstance(text, int):
        return text
    if str(text).strip().lower() == "auto":
        return None
    try:
        return int(str(text).strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give auto or a number of passes such as 3") from None


MEMORY_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_size(text: str | float | None) -> float | None:
    """A memory size as people write it: ``8G``, ``8GiB``, ``1.5G``, ``512M`` (binary units) or bytes."""
    if text is None or isinstance(text, float | int):
        return text
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = MEMORY_UNITS.get(value[-1:], 1)
    try:
        size = float(value[:-1] if scale > 1 else value) * scale
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a memory size (say 8G, 512M or 1.5G)") from None
    if size <= 0:
        raise typer.BadParameter(f"{text!r}: give a positive memory size such as 8G")
    return size


def deprecated(old: str, instead: str) -> None:
    """The one line an old spelling prints while it still works (each goes in moce 0.8)."""
    say(f"warning: {old} is deprecated and goes in moce 0.8; {instead}")


def _threads(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise typer.BadParameter(f"{value} threads: give a count of at least 1, or leave --threads out for all cores")
    if value == 0:
        deprecated("--threads 0", "leave --threads out for all cores")
        return None
    return value


THREADS = typer.Option(None, callback=_threads, help="CPU threads [default: all cores]")
"""``--threads``, one meaning in every command: the CPU threads of the backend (per model instance
under Triton); left out, all the cores this process may use."""


LEGACY_OUT = typer.Option(None, "--out", hidden=True, help="Old spelling of --output (removed in 0.8)")
"""``--out``: the old spelling of ``-o/--output`` in train, demo and triton, kept for one release."""


def output_or_legacy(output: Path, legacy: Path | None, old: str = "--out") -> Path:
    """``-o/--output``, or the old spelling's value with a deprecation line."""
    if legacy is None:
        return output
    deprecated(old, "use -o/--output")
    return legacy


def write_json_output(path: Path, data: Any) -> None:
    """``--json PATH``: the file, written atomically, or standard output for ``-``."""
    if str(path) == "-":
        print_json(data)
    else:
        write_json_atomic(path, data)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table (no terminal dependencies, stable in logs)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def align(text: str, width: int) -> str:
        numeric = text.replace(",", "").replace(".", "").replace("-", "").replace("e", "").replace("%", "").isdigit()
        return text.rjust(width) if numeric else text.ljust(width)

    lines = ["  ".join(align(c, w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
