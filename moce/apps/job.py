"""What a restore job is: which inputs, into where, with which model and options. Shared by the
local loop, the cluster path and (for any medium) the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moce.apps.session_options import SessionOptions
from moce.apps.video import VideoOptions
from moce.imageio import SUPPORTED
from moce.videoio import CONTAINERS


@dataclass
class RestoreJob:
    """What ``moce restore`` does: which files, into where, with which model and how (``session``)."""

    inputs: Path | tuple[Path, ...]  # one file or folder, or several (a shell glob), as cp takes them
    output: Path
    model: str | Path | None = None
    session: SessionOptions = field(default_factory=SessionOptions)  # backend, precision, tiling, threads
    recursive: bool = False
    include: tuple[str, ...] = ()
    ext: str | None = None
    overwrite: bool = False
    allow_lossy: bool = False  # --ext into a format that cannot hold the input's depth or alpha
    report: Path | None = None
    quality: int | None = None  # JPEG / lossy WebP; None: the input's
    video: VideoOptions = field(default_factory=VideoOptions)  # clips: routing over time, the encoder
    filesystem: Any = None  # pyarrow file system holding ``inputs`` (--cluster); None: the local one

    @property
    def sources(self) -> tuple[Path, ...]:
        """The inputs as given, each once."""
        given = (self.inputs,) if isinstance(self.inputs, Path) else tuple(self.inputs)
        return tuple(dict.fromkeys(given))

    @property
    def to_one_file(self) -> bool:
        """One input file restored into an output named like an image or a clip (``a.png b.jpg``)."""
        (first, *more) = self.sources
        return not more and first.is_file() and names_a_file(self.output)


def names_a_file(path: Path) -> bool:
    """Whether an output path is named like an image or a clip (else it names a folder)."""
    return path.suffix.lower() in SUPPORTED or path.suffix.lower() in CONTAINERS
