"""`moce bench --video`: frames per second restoring a clip, against the same frames through the
image path, in one run.

Each size gets a synthetic clip (a pan over a bundled photo with noise and sound). The image path
restores its decoded frames one by one from memory (decoding and encoding not timed); the video
path restores the clip file into a clip file (decoding, colour conversion and encoding included,
overlapped with restoring). Both route per frame, so both run the same experts: the ratio is what
the video path adds. Rounds alternate the two paths; medians are reported.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moce.apps.clips import ClipSpec, synthesize_clip
from moce.apps.session import Session, open_session
from moce.apps.session_options import SessionOptions
from moce.progress import Messages, quiet
from moce.videoio import frame_to_rgb, open_input, probe

VIDEO_SIZES = ((720, 1280), (1080, 1920))
"""``--video``'s default sizes (height, width): 720p and 1080p."""


@dataclass(frozen=True)
class VideoBench:
    sizes: list[tuple[int, int]] = field(default_factory=lambda: list(VIDEO_SIZES))
    frames: int = 8
    session: SessionOptions = field(default_factory=SessionOptions)
    rounds: int = 1


@dataclass
class VideoBenchResult:
    height: int
    width: int
    frames: int
    image_seconds: list[float]  # per round: the frames restored as images
    video_seconds: list[float]  # per round: the clip restored into a clip

    @property
    def image_fps(self) -> float:
        return self.frames / statistics.median(self.image_seconds)

    @property
    def video_fps(self) -> float:
        return self.frames / statistics.median(self.video_seconds)

    @property
    def ratio(self) -> float:
        """Video time per frame over image time per frame (1.0: the video path adds nothing)."""
        return statistics.median(self.video_seconds) / statistics.median(self.image_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": f"{self.width}x{self.height}",
            "frames": self.frames,
            "image_seconds": self.image_seconds,
            "video_seconds": self.video_seconds,
            "image_fps": round(self.image_fps, 3),
            "video_fps": round(self.video_fps, 3),
            "video_over_image": round(self.ratio, 3),
        }


def run_video_bench(
    model: str | Path | None, options: VideoBench, progress: Messages = quiet
) -> list[VideoBenchResult]:
    """Time every size of ``options`` (see the module's docstring)."""
    results = []
    with open_session(model, options.session, progress=progress) as session, tempfile.TemporaryDirectory() as tmp:
        for height, width in options.sizes:
            progress(f"video bench: {width}x{height}, {options.frames} frames, {options.rounds} round(s)")
            clip = synthesize_clip(
                Path(tmp) / f"{width}x{height}.mp4", ClipSpec(frames_per_shot=options.frames, size=(height, width))
            )
            results.append(_time_size(session, clip, options, Path(tmp)))
            progress(f"  image path {results[-1].image_fps:.2f} frames/s, video path {results[-1].video_fps:.2f}")
    return results


def _time_size(session: Session, clip: Path, options: VideoBench, tmp: Path) -> VideoBenchResult:
    info = probe(clip)
    with open_input(clip) as container:
        frames = [frame_to_rgb(f, info.colour) for f in container.decode(video=0)]
    session.restore_rgb(frames[:1])  # warm up: graphs loaded, sessions initialised
    result = VideoBenchResult(info.height, info.width, len(frames), [], [])
    for _ in range(options.rounds):
        start = time.perf_counter()
        for frame in frames:
            session.restore_rgb([frame])
        result.image_seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.restore_video(clip, tmp / "restored.mp4", route_per="frame", overwrite=True)  # its own earlier round
        result.video_seconds.append(time.perf_counter() - start)
    return result
