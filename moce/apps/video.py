"""Restoring one video: decode, restore and encode overlap, routes hold steady, nothing but the
picture changes.

Three stages run at once: a reader thread demuxes and decodes the clip (frames converted to float
RGB with the clip's colour tags, cuts detected), the calling thread restores frames through the
session's :class:`Batcher`, and a writer thread encodes restored frames at their input timestamps
and copies every other stream's packets as they came. Queues between them are bounded, so memory
does not grow with the clip's length: at most a few frames wait in each, plus a shot's decision
window (:data:`moce.apps.shots.WINDOW`).

The output is written to a temporary beside it and renamed when complete; an error, a stop request
or a signal leaves nothing under the final name.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from moce._lazy import require
from moce.apps.batcher import Batcher, Restoring
from moce.apps.shots import ROUTE_PER_VIDEO, WINDOW, CutDetector, Shot, decide, route_changes
from moce.apps.stop import StopRequest
from moce.errors import InputError, MoceError, one_line
from moce.files import atomic_path
from moce.imageio import check_min_side, check_pixels
from moce.progress import NoProgress, Progress
from moce.routing import Route
from moce.runtime.restorer import ImageResult
from moce.videoio import (
    AV_HINT,
    CONTAINERS,
    Encoding,
    VideoInfo,
    VideoWriter,
    choose_encoding,
    frame_to_rgb,
    open_input,
    probe,
    small_bgr,
)


class ClipSession(Restoring, Protocol):
    """What restoring a clip needs of its session (a :class:`moce.Session`): the batcher's restorer,
    and the image path for ``--route-per video``'s sample frames."""

    def restore_rgb(self, images: list[np.ndarray]) -> list[ImageResult]: ...


QUEUE = 8
"""Items (decoded frames, packets to copy) waiting between two stages."""


@dataclass(frozen=True)
class VideoOptions:
    """How a clip is restored and written: routing over time, and the encoder."""

    route_per: str = "shot"  # frame, shot or video (moce.apps.shots.ROUTE_PER_VIDEO)
    codec: str | None = None  # an encoder or codec name; None: the input's where an encoder exists
    crf: int | None = None  # None: the encoder's default (moce.videoio.CRF)
    window: int = WINDOW

    def __post_init__(self) -> None:
        if self.route_per not in ROUTE_PER_VIDEO:
            raise InputError(f"--route-per {self.route_per}: clips route per {', '.join(ROUTE_PER_VIDEO)}")
        if self.window < 1:
            raise InputError(f"a shot's route needs at least one frame to decide from, got {self.window}")


class VideoInterrupted(MoceError):
    """A stop request ended a clip before its last frame; ``frames`` were restored (none kept)."""

    def __init__(self, message: str, frames: int = 0) -> None:
        super().__init__(message)
        self.frames = frames


@dataclass
class VideoResult:
    """One restored clip: its frames, shots and routes, the expert work and how it was encoded."""

    info: VideoInfo
    encoding: Encoding
    frames: int = 0
    shots: list[Shot] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)  # every frame's, in order
    seconds: float = 0.0
    expert_flops: float = 0.0
    dense_expert_flops: float = 0.0

    @property
    def route_changes(self) -> int:
        return route_changes(self.routes)

    def describe(self) -> dict[str, Any]:
        return {
            **self.info.describe(),
            **self.encoding.describe(),
            "frames_restored": self.frames,
            "route_changes": self.route_changes,
            "frames_per_second": round(self.frames / self.seconds, 3) if self.seconds else 0.0,
        }


def read_clip(path: Path, max_pixels: int) -> VideoInfo:
    """What the clip ``path`` holds (:func:`probe`), refused, naming it, when it cannot be read or its
    frames are too small or over ``--max-pixels`` (as an image of that size would be): a problem
    of this clip alone."""
    info = probe(path)
    check_min_side(info.path, info.width, info.height, "each frame")
    check_pixels(info.path, info.width, info.height, max_pixels, "each frame")
    return info


def encoding_for(info: VideoInfo, dest: Path, options: VideoOptions) -> Encoding:
    """How the clip ``info`` is written to ``dest``: refused when the encoder is missing or the
    container of ``dest`` cannot hold it."""
    return choose_encoding(info, CONTAINERS.get(dest.suffix.lower(), info.container), options.codec, options.crf)


# -- the reader ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Frame:
    index: int
    pts: int | None
    duration: int
    time: float  # seconds
    end: float  # seconds: when the next frame is due
    rgb: np.ndarray | None
    cut: bool
    result: ImageResult | None = None
    deciding: bool = False  # in a shot's window: its result waits for the shot's route
    own: Route | None = None  # the route it took alone


@dataclass
class _Packet:
    packet: Any


@dataclass
class _Failed:
    error: BaseException


_END = object()


class _Reader(threading.Thread):
    """Demuxes and decodes the clip into ``items``: frames (float RGB, with cut flags) and the other
    streams' packets, in file order; a decoding error ends it with a line naming the frame time."""

    def __init__(self, info: VideoInfo, container: Any, detect: bool, items: queue.Queue) -> None:
        super().__init__(name="moce-video-reader", daemon=True)
        self.info, self.container, self.items = info, container, items
        self.detector = CutDetector(rate=float(info.rate or 30)) if detect else None
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            self._read()
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the restoring thread, which raises it
            self._put(_Failed(exc))

    def _put(self, item: object) -> None:
        while not self.stopped.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _read(self) -> None:
        av = require("av", AV_HINT)
        video = self.container.streams.video[0]
        index, last, end = 0, 0.0, 0.0
        packets = self.container.demux()
        while not self.stopped.is_set():
            try:
                packet = next(packets, None)
                if packet is None:
                    break
                if packet.stream is not video:
                    self._put(_Packet(packet))
                    continue
                frames = packet.decode()
            except av.FFmpegError as exc:
                raise InputError(
                    f"{one_line(str(self.info.path))}: corrupt after the frame at {last:.3f} s ({one_line(str(exc))})"
                ) from None
            for frame in frames:
                last = float(frame.pts * self.info.time_base) if frame.pts is not None else last
                if frame.is_corrupt:
                    raise InputError(f"{one_line(str(self.info.path))}: corrupt frame at {last:.3f} s")
                cut = self.detector.is_cut(small_bgr(frame)) if self.detector else False
                rgb = frame_to_rgb(frame, self.info.colour)
                end = last + float((frame.duration or 0) * self.info.time_base)
                self._put(_Frame(index, frame.pts, frame.duration or 0, last, end, rgb, cut))
                index += 1
        if not self.stopped.is_set():
            self._check_complete(index, last, end - last)

    def _check_complete(self, frames: int, last: float, duration: float) -> None:
        """A clip that ends before the frame count or the duration its container gives was cut short."""
        info = self.info
        short = frames < info.frames if info.frames else info.duration - (last + duration) > 1.5 * duration + 1e-3
        if not short:
            return
        if info.frames:
            why = f"{frames} of {info.frames} frames decoded, the last at {last:.3f} s"
        else:
            why = f"frames end at {last + duration:.3f} s of {info.duration:.3f} s, after {frames} frames"
        raise InputError(f"{one_line(str(info.path))}: truncated: {why}")


# -- the writer ------------------------------------------------------------------------------


class _Writer(threading.Thread):
    """Encodes restored frames and copies packets, in the order they come."""

    def __init__(self, writer: VideoWriter, items: queue.Queue) -> None:
        super().__init__(name="moce-video-writer", daemon=True)
        self.writer, self.items = writer, items
        self.error: BaseException | None = None
        self.written = 0

    def run(self) -> None:
        """Until the end mark; after an error, items are still taken (and dropped) so that the
        restoring thread, which raises the error, never blocks on a full queue."""
        while (item := self.items.get()) is not _END:
            if self.error is not None:
                continue
            try:
                if isinstance(item, _Frame):
                    assert item.result is not None
                    self.writer.write(item.result.restored, item.pts, item.duration)
                    self.written += 1
                else:
                    self.writer.copy(item.packet)
            except BaseException as exc:  # noqa: BLE001 - raised in the restoring thread
                self.error = exc


# -- restoring -------------------------------------------------------------------------------


class _Router:
    """The restoring stage: frames through the batcher with the route of their shot, out in order."""

    def __init__(
        self,
        session: ClipSession,
        options: VideoOptions,
        out: Callable[[object], None],
        route: Route | None,
        done: Callable[[int], None],
    ) -> None:
        self.options, self.out, self.on_done = options, out, done
        self.per_frame = options.route_per == "frame"
        self.fixed = route  # --route-per video: one route, decided before
        self.route: Route | None = route
        self.pending: deque[_Frame | _Packet] = deque()
        self.window: list[_Frame] = []
        self.shots: list[Shot] = []
        self.routes: list[Route] = []
        self.flops = [0.0, 0.0]
        self.batcher: Batcher[_Frame] = Batcher(session, self._done)

    def frame(self, frame: _Frame) -> None:
        if not self.shots or (frame.cut and self.options.route_per == "shot"):
            self._new_shot(frame)
        shot = self.shots[-1]
        shot.last, shot.end = frame.index, frame.end
        self.pending.append(frame)
        assert frame.rgb is not None
        if self.per_frame:
            self.batcher.add(frame, frame.rgb)
        elif self.route is None:
            frame.deciding = True
            self.window.append(frame)
            self.batcher.add(frame, frame.rgb)
            if len(self.window) >= self.options.window:
                self._decide()
        else:
            self.batcher.add(frame, frame.rgb, self.route)
        self._emit()

    def packet(self, packet: _Packet) -> None:
        self.pending.append(packet)
        self._emit()

    def finish(self) -> None:
        if self.window:
            self._decide()
        self.batcher.flush()
        self._emit()

    def _new_shot(self, frame: _Frame) -> None:
        if self.window:
            self._decide()
        if self.fixed is None and not self.per_frame:
            self.route = None
        self.shots.append(Shot(frame.index, frame.index, frame.time, frame.time, self.fixed))

    def _decide(self) -> None:
        """The shot's route from its window's own routes; frames that took another run again with it."""
        self.batcher.flush()
        window, self.window = self.window, []
        own = [f.own for f in window if f.own is not None]
        shot = self.shots[-1]
        previous = self.shots[-2].route if len(self.shots) > 1 else None
        self.route = self.fixed or decide(own, previous)
        shot.route, shot.decided_from = self.route, len(own)
        shot.agreement = sum(r == self.route for r in own) / len(own)
        for frame in window:
            frame.deciding = False
            if frame.own != self.route:
                frame.result = None
                assert frame.rgb is not None
                self.batcher.add(frame, frame.rgb, self.route)
        self.batcher.flush()

    def _done(self, frame: _Frame, outcome: ImageResult | Exception) -> None:
        if isinstance(outcome, Exception):
            raise outcome
        frame.result = outcome
        if frame.own is None:
            frame.own = tuple(tuple(r) for r in outcome.routes)

    def _emit(self) -> None:
        while self.pending:
            item = self.pending[0]
            if isinstance(item, _Frame):
                if item.deciding or item.result is None:
                    return
                self.routes.append(tuple(tuple(r) for r in item.result.routes))
                self.flops[0] += item.result.expert_flops
                self.flops[1] += item.result.dense_expert_flops
                item.rgb = None
                self.on_done(1)
            self.out(self.pending.popleft())


def restore_video(
    session: ClipSession,
    source: Path,
    dest: Path,
    checked: tuple[VideoInfo, Encoding],
    options: VideoOptions,
    *,
    progress: Progress | None = None,
    stop: StopRequest | None = None,
) -> VideoResult:
    """Restore the clip ``source`` into ``dest`` (written whole or not at all) with ``session``.
    ``checked``: the clip read (:func:`read_clip`) and its encoding chosen (:func:`encoding_for`)
    by the caller, before work, with ``options`` checked (:func:`moce.apps.shots.check_route_per`).
    Raises :class:`VideoInterrupted` (with the frames done) when ``stop`` is requested."""
    progress, stop = progress or NoProgress(), stop or StopRequest()
    info, encoding = checked
    start = time.perf_counter()
    sampled = clip_routes(session, info, options.window) if options.route_per == "video" else []
    fixed = decide(sampled) if sampled else None
    result = VideoResult(info, encoding)
    progress.frames(info.frames)
    av = require("av", AV_HINT)
    try:
        with atomic_path(dest) as temporary, open_input(source) as container:
            writer = VideoWriter(temporary, info, encoding, container)
            try:
                _run(session, options, container, writer, fixed, result, progress, stop)
            except BaseException:
                writer.abandon()
                raise
            writer.close()
    except VideoInterrupted as exc:
        exc.frames = result.frames
        raise
    except av.FFmpegError as exc:
        raise InputError(f"{one_line(str(source))}: {one_line(str(exc))}") from None
    for shot in result.shots if sampled else ():  # --route-per video: one shot, decided before
        shot.decided_from, shot.agreement = len(sampled), sampled.count(shot.route) / len(sampled)
    result.seconds = time.perf_counter() - start
    return result


def _run(
    session: ClipSession,
    options: VideoOptions,
    container: Any,
    writer: VideoWriter,
    fixed: Route | None,
    result: VideoResult,
    progress: Progress,
    stop: StopRequest,
) -> None:
    decoded: queue.Queue = queue.Queue(QUEUE)
    encoded: queue.Queue = queue.Queue(QUEUE)
    reader = _Reader(result.info, container, options.route_per == "shot", decoded)
    encoder = _Writer(writer, encoded)
    router = _Router(session, options, encoded.put, fixed, progress.frame_done)
    reader.start()
    encoder.start()
    try:
        for item in _items(decoded, encoder, stop, result.info):
            (router.frame if isinstance(item, _Frame) else router.packet)(item)  # type: ignore[operator]
        router.finish()
    finally:
        reader.stopped.set()
        encoded.put(_END)
        encoder.join()
        reader.join()
        result.frames, result.shots, result.routes = encoder.written, router.shots, router.routes
        result.expert_flops, result.dense_expert_flops = router.flops
    if encoder.error is not None:
        raise encoder.error


def _items(decoded: queue.Queue, encoder: _Writer, stop: StopRequest, info: VideoInfo) -> Iterator[object]:
    """What the reader decoded, until its end; raises its error, the writer's, or on a stop request."""
    while True:
        if stop.requested:
            raise VideoInterrupted(f"{one_line(str(info.path))}: interrupted")
        if encoder.error is not None:
            raise encoder.error
        try:
            item = decoded.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _END:
            return
        if isinstance(item, _Failed):
            raise item.error
        yield item


def clip_routes(session: ClipSession, info: VideoInfo, samples: int) -> list[Route]:
    """``--route-per video``: the routes ``samples`` frames spread over the clip take alone."""
    total = info.frames or _count_frames(info)
    wanted = set(np.linspace(0, max(total - 1, 0), num=min(samples, max(total, 1))).round().astype(int).tolist())
    routes: list[Route] = []
    with open_input(info.path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                restored = session.restore_rgb([frame_to_rgb(frame, info.colour)])[0]
                routes.append(tuple(tuple(r) for r in restored.routes))
    if not routes:
        raise InputError(f"{one_line(str(info.path))}: has no video frame")
    return routes


def _count_frames(info: VideoInfo) -> int:
    with open_input(info.path) as container:
        return sum(1 for _ in container.demux(video=0) if _.size)
