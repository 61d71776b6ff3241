"""Video files in and out with PyAV (FFmpeg's libraries inside the wheel): what a clip holds, its
frames as the float RGB the runtime restores, and the restored frames encoded with everything
else of the clip kept (timestamps, colour tags, rotation, metadata, other streams packet for packet).

The YUV <-> RGB conversion uses the clip's own tags (BT.601, BT.709 or BT.2020 matrix; limited or
full range), so a restored clip keeps its colours; an untagged clip is read the way FFmpeg's
players guess (BT.709 from 720 lines up, BT.601 below; limited range unless the pixel format is a
full-range ``yuvj`` one). More than 8 bits per sample are restored at 16 bits and written back at
the clip's depth.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moce._lazy import require
from moce.errors import InputError, one_line
from moce.imageio import SUPPORTED

if TYPE_CHECKING:
    import av

AV_HINT = "av"

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
"""Video file suffixes moce restores and the FFmpeg muxer that writes each."""

ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "ffv1": "ffv1", "av1": "libsvtav1"}
"""The encoder that writes each codec (``--codec`` takes either name)."""

DEFAULT_ENCODER = {"webm": "libvpx-vp9"}
"""The encoder for a codec without one here, per container; elsewhere :data:`FALLBACK_ENCODER`."""

FALLBACK_ENCODER = "libx264"

CRF = {"libx264": (18, 0, 51), "libx265": (20, 0, 51), "libvpx-vp9": (24, 0, 63), "libsvtav1": (28, 0, 63)}
"""Per encoder: the default ``--crf`` (visually close to the source) and its range; FFV1 is lossless."""

LOSSLESS = ("ffv1",)

COLORSPACES = {1: "ITU709", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
"""FFmpeg's AVColorSpace codes moce converts with, by the name swscale takes."""

LIMITED, FULL = 1, 2  # AVColorRange: MPEG (16-235), JPEG (0-255)


def _av() -> Any:
    return require("av", AV_HINT)


def is_video(path: Path) -> bool:
    """Whether moce restores ``path`` as a video: by its suffix, or by content where the suffix is
    neither a video's nor an image's (``clip.dat`` holding an mp4)."""
    suffix = path.suffix.lower()
    if suffix in CONTAINERS:
        return True
    if suffix in SUPPORTED:
        return False
    try:
        with path.open("rb") as fh:
            return is_video_head(fh.read(16))
    except OSError:
        return False


def is_video_head(head: bytes) -> bool:
    """Whether a file's first bytes are a video container's: ISO BMFF (mp4, mov), Matroska/WebM or AVI."""
    return head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


@dataclass(frozen=True)
class Colour:
    """A clip's colour tags (FFmpeg's codes), and the matrix and range its YUV is converted with."""

    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    height: int  # an untagged clip's matrix is guessed by its size
    full_format: bool = False  # a full-range ``yuvj`` pixel format

    @property
    def matrix(self) -> str:
        """The YUV matrix the clip is converted with (its tag, or FFmpeg's guess by size)."""
        return COLORSPACES.get(self.colorspace) or ("ITU709" if self.height >= 720 else "ITU601")

    @property
    def range(self) -> int:
        if self.color_range in (LIMITED, FULL):
            return self.color_range
        return FULL if self.full_format else LIMITED

    def tag(self, target: Any) -> None:
        """Carry the four tags to a frame or an encoder's codec context."""
        target.colorspace, target.color_range = self.colorspace, self.color_range
        target.color_primaries, target.color_trc = self.color_primaries, self.color_trc


@dataclass(frozen=True)
class VideoInfo:
    """What a clip holds, read before any work: its video stream and what else it carries."""

    path: Path
    container: str  # the muxer that writes this clip's kind (mp4, matroska, ...)
    codec: str
    width: int
    height: int
    pix_fmt: str
    depth: int  # bits per sample
    time_base: Fraction
    frames: int  # as the container says (0: unknown)
    duration: float  # the video stream's, in seconds, as the container says (0: unknown)
    rate: Fraction | None  # average frame rate
    colour: Colour
    rotation: int
    streams: tuple[str, ...] = field(default=())  # every stream's type, in order
    copied: tuple[tuple[str, str], ...] = field(default=())  # audio and subtitle streams: (type, codec)

    def describe(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "size": f"{self.width}x{self.height}",
            "pix_fmt": self.pix_fmt,
            "frames": self.frames,
            "duration": round(self.duration, 3),
            "matrix": self.colour.matrix,
            "range": "full" if self.colour.range == FULL else "limited",
            "rotation": self.rotation,
        }


def open_input(path: Path) -> av.container.InputContainer:
    """``path`` opened for reading; a file FFmpeg cannot open is an :class:`InputError` naming it."""
    av = _av()
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{one_line(str(path))}: cannot be read as a video ({one_line(str(exc))})") from None


def probe(path: str | Path) -> VideoInfo:
    """What ``path`` holds, with its first frame decoded (rotation and colour tags travel on frames):
    a file with no video stream, a codec this FFmpeg cannot decode or no frame is refused here."""
    av = _av()
    path = Path(path)
    with open_input(path) as container:
        if not container.streams.video:
            raise InputError(f"{one_line(str(path))}: has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None or context.codec is None or not context.codec.is_decoder:
            raise InputError(f"{one_line(str(path))}: its video codec cannot be decoded by this FFmpeg")
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise InputError(f"{one_line(str(path))}: cannot decode its first frame ({one_line(str(exc))})") from None
        if first is None:
            raise InputError(f"{one_line(str(path))}: has no video frame")
        fmt = first.format
        duration = float(stream.duration * stream.time_base) if stream.duration else _tagged_duration(stream)
        return VideoInfo(
            path=path,
            container=CONTAINERS.get(path.suffix.lower()) or container.format.name.split(",")[0],
            codec=context.codec.canonical_name,
            width=first.width,
            height=first.height,
            pix_fmt=fmt.name,
            depth=max(c.bits for c in fmt.components),
            time_base=Fraction(stream.time_base.numerator, stream.time_base.denominator),
            frames=stream.frames or 0,
            duration=duration,
            rate=Fraction(stream.average_rate) if stream.average_rate else None,
            colour=Colour(
                int(first.colorspace),
                int(first.color_range),
                int(first.color_primaries),
                int(first.color_trc),
                first.height,
                fmt.name.startswith("yuvj"),
            ),
            rotation=int(first.rotation or 0),
            streams=tuple(s.type for s in container.streams),
            copied=tuple(
                (s.type, s.codec_context.name)
                for s in container.streams
                if s.type in ("audio", "subtitle") and s.codec_context is not None
            ),
        )


def _tagged_duration(stream: Any) -> float:
    """A stream's duration from its ``DURATION`` tag (``00:00:02.500000000``: Matroska), else 0."""
    text = stream.metadata.get("DURATION", "")
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Encoding:
    """How a restored clip is encoded, and why that way."""

    encoder: str
    pix_fmt: str
    crf: int | None
    why: str
    container: str  # the muxer writing the output

    @property
    def options(self) -> dict[str, str]:
        if self.crf is None:
            return {}
        if self.encoder == "libvpx-vp9":
            return {"crf": str(self.crf), "b": "0"}
        return {"crf": str(self.crf)}

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "pix_fmt_out": self.pix_fmt, "crf": self.crf, "encoder_why": self.why}


def choose_encoding(info: VideoInfo, container: str, codec: str | None = None, crf: int | None = None) -> Encoding:
    """The encoder for a restored clip: ``codec`` if given, else the one for the input's codec, else
    the container's default; its pixel format the input's where it can hold it. Refused here: an
    encoder this machine lacks, one the container cannot hold, a ``crf`` the encoder does not take."""
    av = _av()
    if codec:
        encoder, why = ENCODERS.get(codec, codec), "--codec"
    elif info.codec in ENCODERS:
        encoder, why = ENCODERS[info.codec], f"the input's codec ({info.codec})"
    else:
        encoder = DEFAULT_ENCODER.get(container, FALLBACK_ENCODER)
        why = f"no encoder here writes the input's {info.codec}; the default for {container}"
    try:
        found = av.Codec(encoder, "w")
    except (av.FFmpegError, ValueError):
        raise InputError(f"{one_line(str(info.path))}: no {encoder} encoder on this machine; choose --codec") from None
    if found.type != "video":
        raise InputError(f"{one_line(str(info.path))}: {encoder} is not a video encoder")
    with av.open(io.BytesIO(), "w", format=container) as probe_out:
        holds = probe_out.supported_codecs
    if found.name not in holds:
        raise InputError(f"{one_line(str(info.path))}: a {container} file cannot hold {found.name}; choose --codec")
    lost = next(((kind, name) for kind, name in info.copied if name not in holds), None)
    if lost is not None:
        raise InputError(
            f"{one_line(str(info.path))}: its {lost[0]} ({lost[1]}) cannot be copied into a {container} file; "
            f"name the output with the input's container ({info.path.suffix or info.container})"
        )
    crf = _crf(info, encoder, crf)
    return Encoding(encoder, _pix_fmt(info, found), crf, why, container)


def _crf(info: VideoInfo, encoder: str, crf: int | None) -> int | None:
    if encoder not in CRF:
        if crf is not None:
            raise InputError(f"{one_line(str(info.path))}: --crf does not apply to {encoder}")
        return None
    default, low, high = CRF[encoder]
    if crf is not None and not low <= crf <= high:
        raise InputError(f"--crf {crf}: {encoder} takes {low} to {high}")
    return default if crf is None else crf


def _pix_fmt(info: VideoInfo, encoder: Any) -> str:
    """The input's pixel format if the encoder takes it, else 4:2:0 at the input's depth (8 or 10 bits)."""
    formats = [f.name for f in encoder.video_formats or ()]
    if info.pix_fmt in formats:
        return info.pix_fmt
    for name in (("yuv420p10le",) if info.depth > 8 else ()) + ("yuv420p",):
        if name in formats:
            return name
    return formats[0]


KR_KB = {"ITU709": (0.2126, 0.0722), "ITU601": (0.299, 0.114), "SMPTE170M": (0.299, 0.114)}
KR_KB |= {"SMPTE240M": (0.212, 0.087), "BT2020": (0.2627, 0.0593)}
"""Each matrix's luma weights of red and blue (green's is the rest)."""


def _planar_yuv(fmt: Any) -> bool:
    """Three-plane Y'CbCr in native byte order: what moce converts itself (others go through swscale)."""
    return fmt.name.startswith("yuv") and fmt.is_planar and len(fmt.components) == 3 and not fmt.is_big_endian


def _plane(plane: Any, wide: bool) -> np.ndarray:
    """A frame's plane as a ``height x width`` array (a view: writing it writes the frame)."""
    dtype = np.uint16 if wide else np.uint8
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // np.dtype(dtype).itemsize)
    return rows[:, : plane.width]


def _levels(depth: int, full: bool) -> tuple[float, float, float, float]:
    """Luma offset and scale, chroma offset and scale of ``depth``-bit codes in the given range."""
    if full:
        top = float((1 << depth) - 1)
        return 0.0, top, float(1 << (depth - 1)), top
    step = float(1 << (depth - 8))
    return 16 * step, 219 * step, 128 * step, 224 * step


def frame_to_rgb(frame: av.VideoFrame, colour: Colour) -> np.ndarray:
    """One decoded frame as ``H x W x 3`` float32 RGB in [0, 1], converted in float with the clip's
    matrix and range (chroma upsampled bilinearly, centre-sited), at the frame's full depth."""
    if not _planar_yuv(frame.format):
        return _swscale_to_rgb(frame, colour)
    cv2 = require("cv2", "opencv-python-headless")
    wide = frame.format.components[0].bits > 8
    y, cb, cr = (_plane(p, wide).astype(np.float32) for p in frame.planes[:3])
    y_off, y_scale, c_off, c_scale = _levels(frame.format.components[0].bits, colour.range == FULL)
    luma = (y - y_off) / y_scale
    size = (luma.shape[1], luma.shape[0])
    cb, cr = ((c - c_off) / c_scale for c in (cb, cr))
    if cb.shape != luma.shape:
        cb, cr = (cv2.resize(c, size, interpolation=cv2.INTER_LINEAR) for c in (cb, cr))
    kr, kb = KR_KB[colour.matrix]
    red = luma + 2 * (1 - kr) * cr
    blue = luma + 2 * (1 - kb) * cb
    green = (luma - kr * red - kb * blue) / (1 - kr - kb)
    return np.clip(np.stack([red, green, blue], axis=-1), 0.0, 1.0)


def rgb_to_frame(rgb: np.ndarray, colour: Colour, pix_fmt: str) -> av.VideoFrame:
    """A float RGB frame as a video frame of ``pix_fmt``, in the clip's matrix, range and tags
    (chroma area-averaged to the format's size)."""
    av = _av()
    fmt = av.VideoFormat(pix_fmt)
    if not _planar_yuv(fmt):
        return _swscale_from_rgb(rgb, colour, fmt)
    cv2 = require("cv2", "opencv-python-headless")
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)
    kr, kb = KR_KB[colour.matrix]
    luma = kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    cb = (rgb[..., 2] - luma) / (2 * (1 - kb))
    cr = (rgb[..., 0] - luma) / (2 * (1 - kr))
    frame = av.VideoFrame(rgb.shape[1], rgb.shape[0], pix_fmt)
    depth = fmt.components[0].bits
    y_off, y_scale, c_off, c_scale = _levels(depth, colour.range == FULL)
    top = (1 << depth) - 1
    for plane, values, offset, scale in zip(
        frame.planes, (luma, cb, cr), (y_off, c_off, c_off), (y_scale, c_scale, c_scale)
    ):
        if values.shape != (plane.height, plane.width):
            values = cv2.resize(values, (plane.width, plane.height), interpolation=cv2.INTER_AREA)
        _plane(plane, depth > 8)[:] = np.clip(np.rint(values * scale + offset), 0, top)
    colour.tag(frame)
    return frame


def _rgb_format(fmt: Any) -> str:
    """The packed RGB format that holds ``fmt``'s depth: 16 bits a sample above 8, else 8."""
    return "rgb48le" if max(c.bits for c in fmt.components) > 8 else "rgb24"


def _swscale_to_rgb(frame: av.VideoFrame, colour: Colour) -> np.ndarray:
    """Formats moce does not convert itself (packed, semi-planar, RGB, paletted): through swscale."""
    rgb_format = _rgb_format(frame.format)
    rgb = frame.reformat(
        format=rgb_format,
        src_colorspace=colour.matrix,
        dst_colorspace=colour.matrix,
        src_color_range=colour.range,
        dst_color_range=FULL,
    ).to_ndarray()
    return rgb.astype(np.float32) / (65535.0 if rgb_format == "rgb48le" else 255.0)


def _swscale_from_rgb(rgb: np.ndarray, colour: Colour, fmt: Any) -> av.VideoFrame:
    av = _av()
    rgb_format = _rgb_format(fmt)
    wide = rgb_format == "rgb48le"
    scale = 65535.0 if wide else 255.0
    quantised = np.rint(np.clip(rgb, 0.0, 1.0) * scale).astype(np.uint16 if wide else np.uint8)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(quantised), format=rgb_format).reformat(
        format=fmt.name,
        src_colorspace=colour.matrix,
        dst_colorspace=colour.matrix,
        src_color_range=FULL,
        dst_color_range=colour.range,
    )
    colour.tag(frame)
    return frame


def small_bgr(frame: av.VideoFrame, width: int = 64) -> np.ndarray:
    """A frame at most ``width`` px wide as 8-bit BGR, area-averaged: what shot detection looks at
    (small, so sensor noise averages out and a cut still stands out; cheap at any resolution)."""
    width = min(width, frame.width)
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    return frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA").to_ndarray()


class VideoWriter:
    """A clip written like ``info``'s: its video stream re-encoded from restored frames (each frame
    given its input timestamp), every other stream added from its template for packets to be copied,
    container and stream metadata, colour tags and rotation kept."""

    def __init__(self, path: Path, info: VideoInfo, encoding: Encoding, source: av.container.InputContainer) -> None:
        av = _av()
        self.info, self.encoding = info, encoding
        self.durations: dict[int, int] = {}  # frames in the encoder: pts -> duration
        self.out = av.open(str(path), "w", format=encoding.container)
        try:
            self.out.metadata.update({k: v for k, v in source.metadata.items() if k != "encoder"})
            self.video = self._video_stream(source.streams.video[0])
            self.copied = {s.index: self._copied_stream(s) for s in source.streams if s is not source.streams.video[0]}
        except BaseException:
            self.out.close()
            raise

    def _video_stream(self, template: Any) -> Any:
        info, encoding = self.info, self.encoding
        stream = self.out.add_stream(encoding.encoder, rate=info.rate, options=encoding.options)
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, encoding.pix_fmt
        stream.time_base = info.time_base
        context = stream.codec_context
        context.time_base = info.time_base
        info.colour.tag(context)
        if template.sample_aspect_ratio:
            context.sample_aspect_ratio = template.sample_aspect_ratio
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        stream.metadata.update({k: v for k, v in template.metadata.items() if k not in ("encoder", "handler_name")})
        return stream

    def _copied_stream(self, template: Any) -> Any:
        try:
            stream = self.out.add_stream_from_template(template)
        except (ValueError, TypeError, _av().FFmpegError) as exc:
            raise InputError(
                f"{one_line(str(self.info.path))}: its {template.type} stream {template.index} cannot be copied "
                f"into a {self.encoding.container} file ({one_line(str(exc))})"
            ) from None
        stream.metadata.update(template.metadata)
        return stream

    def write(self, rgb: np.ndarray, pts: int | None, duration: int = 0) -> None:
        """Encode one restored frame at its input timestamp, for its input duration."""
        frame = rgb_to_frame(rgb, self.info.colour, self.encoding.pix_fmt)
        frame.pts, frame.time_base = pts, self.info.time_base
        if duration and pts is not None:
            frame.duration = self.durations[pts] = duration
        self._mux(self.video.encode(frame))

    def _mux(self, packets: list[Any]) -> None:
        """Mux encoded packets, each lasting as long as its input frame did (encoders that reorder
        frames do not all carry the frame's duration to its packet; the clip's end depends on it)."""
        for packet in packets:
            duration = self.durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
        self.out.mux(packets)

    def copy(self, packet: Any) -> None:
        """Mux a packet of another stream as it came (no re-encode)."""
        if packet.dts is None and packet.size == 0:
            return  # the demuxer's flush packet
        packet.stream = self.copied[packet.stream.index]
        self.out.mux(packet)

    def close(self) -> None:
        """Drain the encoder and finish the file."""
        self._mux(self.video.encode(None))
        self.out.close()

    def abandon(self) -> None:
        """Close without finishing (the temporary is removed by its owner)."""
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - an unfinished file is being thrown away
            pass
