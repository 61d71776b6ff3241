"""Routes that hold steady in footage: shot boundaries, and one route per shot.

A mixture-of-experts model routes each frame on its own, so neighbouring frames of one scene may
take different experts and the output flickers. ``--route-per shot`` finds the cuts with
PySceneDetect's content detector (HSV and edge change between consecutive frames) and gives every
frame of a shot the route most of the shot's first frames take alone (:func:`decide`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from moce._lazy import require
from moce.errors import InputError
from moce.routing import Route

ROUTE_PER_VIDEO = ("frame", "shot", "video")
"""How footage routes: each frame alone, one route per shot (the default), one for the whole clip."""

ROUTE_PER = ("image", "tile", *ROUTE_PER_VIDEO)
"""``--route-per``'s values: how a tiled image routes (image, tile), or how a clip routes over time."""


def route_per_of(value: str | None, routing: str = "split") -> tuple[str, str]:
    """``--route-per`` for a run of images and clips: how an image's (or a frame's) tiles route, and
    how a clip routes over time. ``tile`` lets every tile of every frame route itself (so frames
    route alone); ``frame``, ``shot`` or ``video`` leave images routed once per image. Clips route
    per shot by default, per frame under another routing form than ``split`` (only the split plan
    can impose a route)."""
    if value in (None, "image"):
        return "image", "shot" if routing == "split" else "frame"
    if value == "tile":
        return "tile", "frame"
    return "image", value


WINDOW = 5
"""A shot's route is decided from this many of its first frames (fewer in a shorter shot)."""

CUT_THRESHOLD = 27.0
"""PySceneDetect's default content-change threshold for a cut."""

SCENEDETECT = "scenedetect-headless"  # PySceneDetect on OpenCV's headless build, as moce's own OpenCV

MIN_SHOT = 10
"""Frames a shot lasts at least: a flash or a fast pan inside a shot is not taken for a cut."""


def decide(routes: list[Route], previous: Route | None = None) -> Route:
    """The route most of ``routes`` (frames routed alone) took; a tie keeps ``previous`` (the last
    shot's: hysteresis across a cut that changes little) if it is among the tied, else the earliest."""
    counts = Counter(routes)
    top = max(counts.values())
    tied = [r for r in dict.fromkeys(routes) if counts[r] == top]
    return previous if previous in tied else tied[0]


class CutDetector:
    """Cuts between consecutive frames, seen one frame at a time (nothing is held back): PySceneDetect's
    :class:`ContentDetector`, suppressing a second cut within :data:`MIN_SHOT` frames."""

    def __init__(self, threshold: float = CUT_THRESHOLD, min_shot: int = MIN_SHOT, rate: float = 30.0) -> None:
        scenedetect = require("scenedetect", SCENEDETECT)
        suppress = require("scenedetect.detector", SCENEDETECT).FlashFilter.Mode.SUPPRESS

        self._timecode = scenedetect.FrameTimecode
        self._rate = rate
        self._detector = scenedetect.ContentDetector(threshold=threshold, min_scene_len=min_shot, filter_mode=suppress)
        self._index = 0

    def is_cut(self, bgr: np.ndarray) -> bool:
        """Whether this frame (8-bit BGR, small) starts a new shot."""
        cuts = self._detector.process_frame(self._timecode(self._index, fps=self._rate), bgr)
        self._index += 1
        return bool(cuts) and self._index > 1


@dataclass
class Shot:
    """One shot of a restored clip, as the report gives it."""

    first: int  # frame indices, inclusive
    last: int
    start: float  # seconds: the first frame's presentation time, and when the shot's last frame ends
    end: float
    route: Route | None = None
    decided_from: int = 0  # frames routed alone to decide the route
    agreement: float = 1.0  # share of those frames whose own route was the shot's

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_frame": self.first,
            "last_frame": self.last,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "route": [list(r) for r in self.route] if self.route is not None else None,
            "decided_from": self.decided_from,
            "agreement": round(self.agreement, 3),
        }


def route_changes(routes: list[Route]) -> int:
    """How often consecutive frames' routes differ."""
    return sum(a != b for a, b in zip(routes, routes[1:]))


def check_route_per(route_per: str, routing: str) -> None:
    """Refuse before work a clip routed per shot or video under a routing form that cannot impose it."""
    if route_per != "frame" and routing != "split":
        raise InputError(
            f"--route-per {route_per}: imposing one route on many frames needs --routing split; "
            f"with --routing {routing}, use --route-per frame"
        )
