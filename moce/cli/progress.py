"""Progress display for long commands: a live bar on a terminal, plain lines in logs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from moce.errors import one_line


class CliProgress:
    """Images and tiles; falls back to one line per image when stderr is not a terminal."""

    def __init__(self) -> None:
        self.live = sys.stderr.isatty()
        self.done = 0
        self.total = 0
        self._bar = None

    def start(self, images: int) -> None:
        self.total = images
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
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
        else:
            typer.echo(f"[{self.done}/{self.total}] {status:<7} {one_line(str(path))}", err=True)

    def tiles(self, total: int) -> None:
        if self._bar is not None:
            self._bar.reset(self._tiles, total=total, visible=True)

    def tile_done(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._tiles, count)

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            typer.echo(text, err=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
