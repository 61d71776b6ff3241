"""What every command shares: turning :class:`MoceError` into a message and an exit code."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import typer

from moce.cli.options import refusing
from moce.errors import MoceError
from moce.files import write_json_atomic
from moce.outputs import signed

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def writes(text: str) -> Path:
    """The parser of every option or argument that names a path the command writes. Each command
    declares those paths to :func:`moce.outputs.check_writes` before any work; the tests find every
    such option by this parser, so a new one is checked without editing them."""
    return Path(text)


def reads(text: str) -> Path:
    """The parser of every option or argument that names a file or folder the command reads (what
    the output guard keeps every written path off)."""
    return Path(text)


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


@refusing("0")
def _threads(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise typer.BadParameter(f"{value} threads: give a count of at least 1, or leave --threads out for all cores")
    return value


THREADS = typer.Option(None, callback=_threads, help="CPU threads [default: all cores]")
"""``--threads``, one meaning in every command: the CPU threads of the backend (per model instance
under Triton); left out, all the cores this process may use."""


def options_of(kind: type[T], values: dict[str, Any]) -> T:
    """An options dataclass from a command's parameters of its fields' names (``locals()`` at the
    top of the command): the fields and their defaults stay declared in the library alone."""
    return kind(**{f.name: values[f.name] for f in fields(kind) if f.name in values})  # type: ignore[call-arg]


def write_json_output(path: Path, data: Any, signature: str | None = None) -> None:
    """``--json PATH``: the file, written atomically and signed by ``signature``'s command (where
    the data is not signed already), or standard output for ``-``."""
    if str(path) == "-":
        print_json(data)
    else:
        write_json_atomic(path, signed(data, signature) if signature else data)


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
