"""Image files in and out with OpenCV: formats, bit depths, grayscale, alpha, atomic writes.

Images travel through the runtime as float32 RGB in [0, 1], HWC. What the file held (bit depth,
grayscale, alpha) is kept in :class:`ImageInfo` so the output is written back the same way.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from moce.errors import InputError
from moce.files import write_bytes_atomic
from moce.image_headers import big_endian, check_complete, header_size
from moce.names import MIN_SIDE
from moce.outputs import png_text

SUPPORTED = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".bmp", ".webp")
NO_ALPHA = (".jpg", ".jpeg")
DEFAULT_MAX_PIXELS = 64_000_000
"""Images with more pixels are refused before decoding (``--max-pixels``): a 64 MP image takes
about 0.8 GB as float32 RGB, and a forged header must not make the decoder allocate gigabytes."""


def _cv2():  # noqa: ANN202 - the cv2 module
    from moce._lazy import require

    return require("cv2", "opencv-python-headless")


@dataclass(frozen=True)
class Metadata:
    """What a photo carries besides its pixels, written back into outputs of a format that holds it.

    ``exif``: the EXIF block (orientation included: pixels are restored as stored, so the tag keeps
    showing them the right way up); ``icc``: the colour profile; ``quality``: the JPEG quality its
    quantisation tables say it was saved at; ``lossy``: whether a WebP was lossy.
    """

    exif: bytes | None = None
    icc: bytes | None = None
    quality: int | None = None
    lossy: bool = False
    software: str | None = None  # a PNG's Software text: the moce command that wrote a chart


@dataclass(frozen=True)
class ImageInfo:
    """How an image was stored: restored output is written back in the same form."""

    dtype: str  # "uint8", "uint16" or "float32"
    gray: bool
    alpha: np.ndarray | None  # the alpha plane as read, written back unchanged
    metadata: Metadata = field(default_factory=Metadata)


def conversion_loss(bits: int, alpha: bool, suffix: str) -> str | None:
    """What writing an image of ``bits`` per sample (and alpha) as ``suffix`` would lose, or None."""
    suffix = suffix.lower()
    if bits > 8 and suffix in EIGHT_BIT_ONLY:
        return f"its {bits}-bit samples would become 8-bit in {suffix}"
    if alpha and suffix in NO_ALPHA:
        return f"its alpha channel would be dropped in {suffix}"
    return None


def storage_of(info: ImageInfo) -> tuple[int, bool]:
    """``(bits per sample, has alpha)`` of a decoded image, as :func:`header_storage` reads them."""
    return {"uint8": 8, "uint16": 16}.get(info.dtype, 32), info.alpha is not None


def check_min_side(path: Path | str, width: int, height: int, what: str = "image") -> None:
    """Refuse, naming ``path``, an image (or a clip's frames: ``what``) too small for the network."""
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{path}: {what} is {width}x{height}; both sides must be at least {MIN_SIDE} px")


def check_pixels(path: Path | str, width: int, height: int, max_pixels: int, what: str = "image") -> None:
    if width * height > max_pixels:
        raise InputError(
            f"{path}: {what} is {width}x{height} ({_count(width * height, '.1f')}), over the limit of "
            f"{_count(max_pixels, 'g')}; raise --max-pixels to restore it in tiles"
        )


def _count(pixels: int, style: str) -> str:
    """A pixel count in the unit people read: MP from a tenth of a megapixel, pixels below."""
    return f"{pixels / 1e6:{style}} MP" if pixels >= 100_000 else f"{pixels:,} pixels"


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` to float32 RGB HWC in [0, 1]; raise :class:`InputError` naming the file.

    The header's size is checked against ``max_pixels`` before anything is decoded, every decoder
    error is an :class:`InputError`, and float images holding NaN or infinity are refused.
    """
    if path.suffix.lower() not in SUPPORTED:
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'}; supported: {', '.join(SUPPORTED)}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(path, data, max_pixels)


def decode_image(path: Path, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """:func:`read_image` on the bytes of the file ``path`` (read already, or fetched from a cluster's storage)."""
    cv2 = _cv2()
    if not data:
        raise InputError(f"{path}: empty file")
    check_complete(path, data)
    size = header_size(data)
    if size is not None:
        check_pixels(path, *size, max_pixels)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1][:200]
        raise InputError(f"{path}: cannot decode as {path.suffix.lstrip('.').upper()} ({reason})") from None
    if image is None:
        raise InputError(f"{path}: cannot decode as {path.suffix.lstrip('.').upper()} (corrupt or not an image)")
    check_pixels(path, image.shape[1], image.shape[0], max_pixels)
    rgb, info = to_rgb_float(path, image)
    if info.dtype == "float32" and not np.isfinite(rgb).all():
        raise InputError(f"{path}: holds NaN or infinite pixel values")
    return rgb, replace(info, metadata=read_metadata(data))


TIFF_DESCRIPTIVE_TAGS = (270, 271, 272, 282, 283, 296, 305, 306, 315, 33432)
"""The tags of a TIFF's own directory that describe the photo rather than how it is stored:
description, make, model, resolution, software, date, artist, copyright. Not the orientation:
OpenCV hands a TIFF's pixels over already turned upright, and they are restored that way."""
EXIF_SUB_IFDS = (0x8769, 0x8825)
"""The camera (Exif) and GPS directories a TIFF or EXIF block points to."""


def _tiff_exif(image: Any) -> bytes | None:
    """A TIFF's descriptive tags and its Exif and GPS directories as an EXIF block: the same metadata
    JPEG, PNG and WebP files carry, so it travels to outputs of any format."""
    tags = image.getexif()
    exif = type(tags)()
    for tag in TIFF_DESCRIPTIVE_TAGS:
        if tag in tags:
            exif[tag] = tags[tag]
    for pointer in EXIF_SUB_IFDS:
        exif.get_ifd(pointer).update(tags.get_ifd(pointer))
    return exif.tobytes() if len(exif) or any(exif.get_ifd(p) for p in EXIF_SUB_IFDS) else None


def read_metadata(data: bytes) -> Metadata:
    """EXIF, ICC profile and lossy-coding facts of an encoded image (Pillow reads them); a file
    Pillow cannot parse carries none (its pixels came from OpenCV, which read it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            exif = _tiff_exif(image) if image.format == "TIFF" else image.info.get("exif") or None
            quality = _jpeg_quality(image.quantization) if image.format == "JPEG" else None
            lossy = image.format == "WEBP" and b"VP8 " in data[12:4096]
            return Metadata(exif, image.info.get("icc_profile") or None, quality, lossy)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return Metadata()


IJG_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip
"""The JPEG standard's luminance table, which libjpeg scales by the quality setting."""


def _jpeg_quality(tables: dict[int, list[int]] | None) -> int | None:
    """The libjpeg quality whose scaling of the standard table gives this luminance table (the
    inverse of libjpeg's ``jpeg_quality_scaling``); None for tables of another origin."""
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    scale = 100.0 * sum(tables[0]) / sum(sum(row) for row in IJG_LUMINANCE)
    quality = 5000.0 / scale if scale > 100 else (200.0 - scale) / 2
    return int(min(100, max(1, round(quality))))


def to_rgb_float(path: Path, image: np.ndarray) -> tuple[np.ndarray, ImageInfo]:
    cv2 = _cv2()
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}
    if image.dtype not in scale:
        raise InputError(f"{path}: unsupported sample type {image.dtype} (8-bit, 16-bit or float32 images only)")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        raise InputError(f"{path}: unsupported layout with {channels} channels (gray, RGB or RGBA only)")
    alpha = image[:, :, 3].copy() if channels == 4 else None
    if channels == 1:
        image = image if image.ndim == 2 else image[:, :, 0]
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    else:
        rgb = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    info = ImageInfo(dtype=image.dtype.name, gray=channels == 1, alpha=alpha)
    return rgb.astype(np.float32) / np.float32(scale[image.dtype]), info


def from_rgb_float(rgb: np.ndarray, info: ImageInfo, suffix: str) -> np.ndarray:
    """Quantise a restored float RGB image back to the input's depth, channels and alpha."""
    cv2 = _cv2()
    dtype = "uint8" if suffix.lower() in EIGHT_BIT_ONLY and info.dtype != "uint8" else info.dtype
    rgb = np.clip(rgb, 0.0, 1.0)
    if dtype == "float32":
        out = rgb.astype(np.float32)
    else:
        peak = 255.0 if dtype == "uint8" else 65535.0
        out = np.round(rgb * peak).astype(dtype)
    if info.gray:
        return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    bgr = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    if info.alpha is not None:
        alpha = info.alpha if info.alpha.dtype == bgr.dtype else _convert_depth(info.alpha, bgr.dtype)
        bgr = np.dstack([bgr, alpha])
    return bgr


def array_to_rgb(image: np.ndarray, label: str) -> tuple[np.ndarray, ImageInfo]:
    """An in-memory ``H x W [x C]`` image in RGB(A) order (C = 1, 3 or 4) as the float RGB the
    runtime restores, and how it was stored: the very conversion a decoded file goes through."""
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4) or image.ndim not in (2, 3):
        raise InputError(f"{label}: expected H x W or H x W x C with C = 1, 3 or 4, got shape {list(image.shape)}")
    rgb, info = to_rgb_float(Path(label), swap_red_blue(image))
    if info.dtype == "float32" and not np.isfinite(rgb).all():
        raise InputError(f"{label}: holds NaN or infinite pixel values")
    if np.issubdtype(image.dtype, np.floating) and image.size and (image.min() < 0 or image.max() > 1):
        raise InputError(
            f"{label}: float pixel values lie in [{float(image.min()):.4g}, {float(image.max()):.4g}]; moce takes "
            "float images in [0, 1] (divide 8-bit values by 255)"
        )
    return rgb, info


def rgb_to_array(rgb: np.ndarray, info: ImageInfo) -> np.ndarray:
    """A restored float RGB image back in the type and layout :func:`array_to_rgb` read (RGB order)."""
    return swap_red_blue(from_rgb_float(rgb, info, ".png"))


def swap_red_blue(image: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A), the channel order of OpenCV's files; gray stays as it is."""
    if image.ndim == 2 or image.shape[2] == 1:
        return image
    return np.ascontiguousarray(image[:, :, [2, 1, 0, 3][: image.shape[2]]])


def image_files(folder: Path, what: str, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The supported image files directly in ``folder``, sorted by name (the order fixes seeds and
    reports); ``what`` names them in the error when there are none. Stems in ``exclude`` are skipped,
    and so are hidden and empty files, as ``moce restore`` passes over them (a ``._photo.jpg`` that
    macOS leaves beside each photo is not a photo)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if _listed_image(p) and p.stem not in exclude)
    if not files:
        raise InputError(f"{folder}: no {what} (supported: {', '.join(SUPPORTED)})")
    return files


def _listed_image(path: Path) -> bool:
    if path.name.startswith(".") or path.suffix.lower() not in SUPPORTED:
        return False
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def read_images(folder: Path, what: str, exclude: tuple[str, ...] = ()) -> list[tuple[str, np.ndarray]]:
    """``(stem, float RGB)`` of every image :func:`image_files` lists, in its order."""
    return [(p.stem, read_image(p)[0]) for p in image_files(folder, what, exclude)]


def _convert_depth(plane: np.ndarray, dtype: np.dtype) -> np.ndarray:
    peaks = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}
    return (plane.astype(np.float64) / peaks[plane.dtype] * peaks[np.dtype(dtype)]).round().astype(dtype)


DEFAULT_QUALITY = 95
"""JPEG and lossy WebP quality when the input says none (a PNG restored as JPEG, say)."""


def write_image_atomic(
    path: Path, image: np.ndarray, quality: int | None = None, metadata: Metadata | None = None
) -> None:
    """Encode fully in memory, write a hidden temporary file beside ``path``, then rename it.

    ``image`` is in OpenCV's layout (BGR(A) or gray). ``metadata`` (EXIF, ICC profile) goes into
    JPEG, PNG and WebP outputs; ``quality`` (JPEG, lossy WebP) defaults to the input's.
    A crash or kill leaves either the old state or the complete new file, never a partial one.
    """
    write_bytes_atomic(path, encode_image(path, image, quality, metadata or Metadata()))


def write_chart(path: Path, image: np.ndarray, signature: str) -> None:
    """A chart (OpenCV's BGR layout) as a PNG signed with the moce command that drew it, so that a
    rerun may replace it and nothing else (:mod:`moce.outputs`)."""
    write_image_atomic(path, image, metadata=Metadata(software=signature))


def encode_image(path: Path, image: np.ndarray, quality: int | None, metadata: Metadata) -> bytes:
    """``image`` encoded as ``path``'s format, carrying ``metadata`` where the format holds it."""
    suffix = path.suffix.lower()
    carried = metadata.exif is not None or metadata.icc is not None or metadata.software is not None
    pillow = suffix in (".jpg", ".jpeg") or suffix in (".tif", ".tiff") and _pillow_writes_tiff(image)
    if pillow and carried or suffix == ".webp" and (carried or metadata.lossy):
        return _pillow_encode(image, suffix, quality or metadata.quality or DEFAULT_QUALITY, metadata)
    cv2 = _cv2()
    jpeg_quality = quality or metadata.quality or DEFAULT_QUALITY
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise InputError(f"{path}: OpenCV could not encode this image as {path.suffix}")
    data = encoded.tobytes()
    return _png_with(data, metadata) if suffix == ".png" and carried else data


def _pillow_writes_tiff(image: np.ndarray) -> bool:
    """Whether Pillow's TIFF writer holds these samples (8-bit, or 16-bit gray; not 16-bit colour)."""
    return image.dtype == np.uint8 or image.dtype == np.uint16 and image.ndim == 2


def _pillow_encode(image: np.ndarray, suffix: str, quality: int, metadata: Metadata) -> bytes:
    """JPEG, WebP and TIFF through Pillow, which writes EXIF (with its camera and GPS directories)
    and ICC profiles into them. TIFFs are written uncompressed: Pillow's compressing TIFF writer
    (libtiff) cannot write the Exif directory."""
    from PIL import Image

    rgb = image if image.ndim == 2 else swap_red_blue(image)
    if suffix in (".jpg", ".jpeg") and rgb.ndim == 3 and rgb.shape[2] == 4:
        rgb = rgb[:, :, :3]
    extra = {k: v for k, v in (("exif", metadata.exif), ("icc_profile", metadata.icc)) if v is not None}
    out = io.BytesIO()
    if suffix == ".webp":
        Image.fromarray(rgb).save(out, "WEBP", quality=quality, lossless=not metadata.lossy, **extra)
    elif suffix in (".tif", ".tiff"):
        Image.fromarray(rgb).save(out, "TIFF", **extra)
    else:
        Image.fromarray(rgb).save(out, "JPEG", quality=quality, **extra)
    return out.getvalue()


def _png_with(data: bytes, metadata: Metadata) -> bytes:
    """A PNG from OpenCV with ``iCCP`` and ``eXIf`` chunks after its header chunk: Pillow writes
    them only for 8-bit images, and moce's PNGs may hold 16-bit samples."""
    chunks = b"" if metadata.software is None else _png_chunk(b"tEXt", png_text(metadata.software))
    if metadata.icc is not None:
        chunks += _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(metadata.icc))
    if metadata.exif is not None:
        exif = metadata.exif[6:] if metadata.exif.startswith(b"Exif\0\0") else metadata.exif
        chunks += _png_chunk(b"eXIf", exif)
    end_of_header = 8 + 12 + big_endian(data, 8, 4)  # signature, then IHDR's length, type, data and CRC
    return data[:end_of_header] + chunks + data[end_of_header:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return len(payload).to_bytes(4, "big") + kind + payload + crc.to_bytes(4, "big")
