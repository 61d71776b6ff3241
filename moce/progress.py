"""What long work reports while it runs: one protocol for every front end.

Library functions take a :class:`Progress` (images and tiles) or, for work that has no images, a
:data:`Messages` sink of one-line messages; the CLI draws both (``moce.cli.progress``), tests may
record them, and :class:`NoProgress` drops everything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

Messages = Callable[[str], None]
"""A sink for one-line progress messages (export steps, validation cases, build steps)."""


class Progress(Protocol):
    """Images, tiles and a clip's frames as a run goes through them, and free-form messages."""

    def start(self, images: int) -> None: ...
    def image_done(self, path: Path, status: str) -> None: ...
    def tiles(self, total: int) -> None: ...
    def tile_done(self, count: int) -> None: ...
    def frames(self, total: int) -> None:
        """A clip of ``total`` frames (0: unknown) starts."""

    def frame_done(self, count: int) -> None: ...
    def message(self, text: str) -> None: ...


class NoProgress:
    """A :class:`Progress` that shows nothing."""

    def start(self, images: int) -> None: ...
    def image_done(self, path: Path, status: str) -> None: ...
    def tiles(self, total: int) -> None: ...
    def tile_done(self, count: int) -> None: ...
    def frames(self, total: int) -> None: ...
    def frame_done(self, count: int) -> None: ...
    def message(self, text: str) -> None: ...


def quiet(message: str) -> None:
    """A :data:`Messages` sink that drops every message."""
