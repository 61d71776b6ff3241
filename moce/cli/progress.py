"""What a command says while it works: progress (a live bar on a terminal, plain lines in logs)
and messages, at the verbosity of the global ``-q/--quiet`` and ``-v/--verbose``.

Quiet: warnings, errors and the command's result only. Verbose: every message stamped with the
seconds since the command started (per-stage timings), and one line per image with its time.
"""

from __future__ import annotations

import sys
import time
from enum import IntEnum
from pathlib import Path

import typer

from moce.errors import one_line


class Verbosity(IntEnum):
    QUIET = 0
    NORMAL = 1
    VERBOSE = 2


class _Settings:
    level = Verbosity.NORMAL
    started = time.perf_counter()


def set_verbosity(level: Verbosity) -> None:
    """The verbosity of this command (set once per invocation by the root callback)."""
    _Settings.level, _Settings.started = level, time.perf_counter()


def verbosity() -> Verbosity:
    return _Settings.level


def say(message: str) -> None:
    """A :data:`moce.progress.Messages` sink: the message on stderr, unless quiet (warnings always)."""
    if _Settings.level == Verbosity.QUIET and not message.startswith("warning:"):
        return
    typer.echo(_stamped(message), err=True)


def _stamped(message: str) -> str:
    if _Settings.level < Verbosity.VERBOSE:
        return message
    return f"[{time.perf_counter() - _Settings.started:7.2f} s] {message}"


TILE_LINE_SECONDS = 5.0
"""Without a live bar (logs, pipes), progress inside one input (tiles, frames) is a line at most this often."""


def tile_line(done: int, total: int, elapsed: float, kind: str = "tiles") -> str:
    """``tiles 4/12, 10 s, about 20 s left`` (inside one tiled image), or ``frames 40/300, 2.1/s,
    19 s, about 124 s left`` (inside a clip; total 0 when the clip does not say)."""
    rate = f", {done / elapsed:.1f}/s" if kind == "frames" and elapsed > 0 else ""
    if not total:
        return f"{kind} {done}{rate}, {elapsed:.0f} s"
    left = elapsed / done * (total - done) if done else float("nan")
    return f"{kind} {done}/{total}{rate}, {elapsed:.0f} s, about {left:.0f} s left"


class CliProgress:
    """Images and tiles; one line per image when stderr is not a terminal (or with -v); nothing but
    warnings with -q."""

    def __init__(self) -> None:
        self.quiet = _Settings.level == Verbosity.QUIET
        self.live = sys.stderr.isatty() and _Settings.level == Verbosity.NORMAL
        self.done = 0
        self.total = 0
        self._bar = None
        self._tiles_total = self._tiles_done = 0
        self._tiles_started = self._tiles_said = 0.0
        self._kind = "tiles"

    def start(self, images: int) -> None:
        self.total = images
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._bar.start()
            self._images = self._bar.add_task("images", total=images)
            self._tiles = self._bar.add_task("tiles", total=0, visible=False)

    def image_done(self, path: Path, status: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._images)
            self._bar.update(self._tiles, visible=False)
        elif not self.quiet:
            typer.echo(_stamped(f"[{self.done}/{self.total}] {status:<7} {one_line(str(path))}"), err=True)

    def tiles(self, total: int) -> None:
        self._inner("tiles", total)

    def tile_done(self, count: int) -> None:
        self._step(count)

    def frames(self, total: int) -> None:
        self._inner("frames", total)

    def frame_done(self, count: int) -> None:
        self._step(count)

    def _inner(self, kind: str, total: int) -> None:
        """Progress inside one input: its tiles, or a clip's frames."""
        self._kind, self._tiles_total, self._tiles_done = kind, total, 0
        self._tiles_started = self._tiles_said = time.perf_counter()
        if self._bar is not None:
            self._bar.reset(self._tiles, total=total or None, visible=True, description=kind)

    def _step(self, count: int) -> None:
        self._tiles_done += count
        now = time.perf_counter()
        elapsed = now - self._tiles_started
        if self._bar is not None:
            rate = f" {self._tiles_done / elapsed:.1f}/s" if self._kind == "frames" and elapsed > 0 else ""
            self._bar.update(self._tiles, advance=count, description=f"{self._kind}{rate}")
            return
        if self.quiet or now - self._tiles_said < TILE_LINE_SECONDS:
            return
        if self._tiles_total and self._tiles_done >= self._tiles_total:
            return
        self._tiles_said = now
        typer.echo(_stamped(tile_line(self._tiles_done, self._tiles_total, elapsed, self._kind)), err=True)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            say(text)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
