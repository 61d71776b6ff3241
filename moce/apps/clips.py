"""Synthetic clips from the bundled photos: a pan over a degraded photo per shot, with sound.

``moce bench --video`` times restoring them, ``scripts/make_sample_clip.py`` makes the sample clip,
and the tests check on them that nothing but the picture changes (timestamps, variable frame rate,
sound, rotation, colour tags, 10 bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from moce._lazy import require
from moce.data import SAMPLES
from moce.data.degrade import degrade
from moce.files import atomic_path
from moce.imageio import read_image
from moce.videoio import AV_HINT, CONTAINERS, Colour, rgb_to_frame

TIME_BASE = Fraction(1, 90000)
"""The clips' video time base: MPEG's 90 kHz clock, which every container here keeps."""


@dataclass(frozen=True)
class ClipSpec:
    """What a synthetic clip shows and how it is stored."""

    shots: tuple[tuple[str, str], ...] = (("coffee", "noise25"),)  # per shot: a bundled photo, a degradation
    frames_per_shot: int = 24
    size: tuple[int, int] = (96, 128)  # height, width
    rate: int = 24
    pan: bool = True  # False: a static camera (only the noise, if any, changes)
    vfr: bool = False  # alternate frames last 1/rate and 1.5/rate
    audio: bool = True  # a mono AAC tone for the clip's length
    rotation: int = 0  # display rotation, degrees
    encoder: str = "libx264"
    pix_fmt: str = "yuv420p"
    colorspace: int = 1  # AVColorSpace: 1 BT.709, 6 BT.601 (SMPTE 170M)
    color_range: int = 1  # AVColorRange: 1 limited, 2 full
    seed: int = 0

    @property
    def colour(self) -> Colour:
        """Its tags: the matrix's own primaries and transfer, as cameras tag BT.709 and BT.601."""
        return Colour(self.colorspace, self.color_range, self.colorspace, self.colorspace, self.size[0])

    def durations(self) -> list[int]:
        """Each frame's duration in :data:`TIME_BASE` units."""
        step = int(1 / (self.rate * TIME_BASE))
        count = self.frames_per_shot * len(self.shots)
        return [step * 3 // 2 if self.vfr and i % 2 else step for i in range(count)]


def clip_frames(spec: ClipSpec) -> list[np.ndarray]:
    """The clip's frames as float RGB: each shot pans slowly (a pixel a frame, as a hand-held camera
    drifts) across its photo, degraded."""
    cv2 = require("cv2", "opencv-python-headless")
    h, w = spec.size
    frames = []
    for shot, (name, degradation) in enumerate(spec.shots):
        photo, _ = read_image(SAMPLES / "clean" / f"{name}.png")
        n = spec.frames_per_shot
        scale = max((h + n) / photo.shape[0], (w + n) / photo.shape[1], 1.0)
        big = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)))
        still = not degradation.startswith("noise")  # haze, rain, blur: one degraded scene the camera pans over
        scene = degrade(big, degradation, spec.seed + shot) if still else big
        for i in range(n):
            top, left = (i // 2, i) if spec.pan else (0, 0)
            crop = scene[top : top + h, left : left + w]
            frames.append(crop if still else degrade(crop, degradation, spec.seed + 1000 * shot + i))
    return frames


def synthesize_clip(path: Path, spec: ClipSpec | None = None) -> Path:
    """Write the clip ``spec`` describes to ``path`` (its suffix names the container), atomically."""
    av = require("av", AV_HINT)
    spec = spec or ClipSpec()
    with atomic_path(path) as temporary, av.open(str(temporary), "w", format=CONTAINERS[path.suffix.lower()]) as out:
        out.metadata["title"] = "moce sample clip"
        video = out.add_stream(spec.encoder, rate=spec.rate)
        video.width, video.height, video.pix_fmt = spec.size[1], spec.size[0], spec.pix_fmt
        video.time_base = video.codec_context.time_base = TIME_BASE
        spec.colour.tag(video.codec_context)
        if spec.rotation:
            video.set_display_rotation(spec.rotation)
        audio = out.add_stream("aac", rate=48000) if spec.audio else None
        if audio is not None:
            audio.metadata["language"] = "eng"
        pts = 0
        for rgb, duration in zip(clip_frames(spec), spec.durations()):
            frame = rgb_to_frame(rgb, spec.colour, spec.pix_fmt)
            frame.pts, frame.time_base, frame.duration = pts, TIME_BASE, duration
            out.mux(video.encode(frame))
            pts += duration
        out.mux(video.encode(None))
        if audio is not None:
            _tone(av, out, audio, float(pts * TIME_BASE))
    return path


def _tone(av: Any, out: Any, stream: Any, seconds: float) -> None:
    """A 440 Hz tone for ``seconds``, in AAC frames of 1024 samples."""
    rate, size = 48000, 1024
    for start in range(0, int(seconds * rate), size):
        t = (start + np.arange(size)) / rate
        samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


SAMPLE_CLIP_SPEC = ClipSpec(shots=(("coffee", "noise25"), ("chelsea", "haze")), frames_per_shot=24, size=(144, 224))
"""The bundled sample clip (``moce/data/sample_clip.mp4``, made by ``scripts/make_sample_clip.py``)."""
