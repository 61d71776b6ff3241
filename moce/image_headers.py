"""What an image file's header says before it is decoded: its size, its storage (depth, channels,
alpha), and whether it is complete. Read from the first bytes alone, so that a file too large, truncated
or forged is refused before a decoder allocates what it claims."""

from __future__ import annotations

import struct
from pathlib import Path

from moce.errors import InputError


def check_complete(path: Path, data: bytes) -> None:
    """Catch truncation that decoders forgive (a JPEG without its end marker decodes grey), and
    length fields that claim more than the file holds (a decoder may allocate what they claim:
    OpenCV's PNG reader took 3 GB for one forged chunk length)."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg") and data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker)")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        _check_png_chunks(path, data)
    if data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        raise InputError(f"{path}: truncated or corrupt RIFF/WebP (its header claims more bytes than the file has)")


def _check_png_chunks(path: Path, data: bytes) -> None:
    """Every chunk's length fits in the file, and the last chunk is IEND."""
    i, kind = 8, b""
    while i + 8 <= len(data) and kind != b"IEND":
        length, kind = big_endian(data, i, 4), data[i + 4 : i + 8]
        if i + 12 + length > len(data):
            raise InputError(f"{path}: truncated or corrupt PNG (chunk {kind!r} claims {length} bytes past the end)")
        i += 12 + length
    if kind != b"IEND":
        raise InputError(f"{path}: truncated PNG (no IEND chunk)")


def big_endian(data: bytes, offset: int, size: int) -> int:
    return int.from_bytes(data[offset : offset + size], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first start-of-frame marker."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return big_endian(data, i + 7, 2), big_endian(data, i + 5, 2)
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + big_endian(data, i + 2, 2)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first image file directory (classic TIFF)."""
    tags = tiff_tags(data)
    return (tags[256], tags[257]) if tags is not None and 256 in tags and 257 in tags else None


def tiff_tags(data: bytes) -> dict[int, int] | None:
    """The first value of every SHORT or LONG tag of a classic TIFF's first image file directory;
    None when ``data`` is not a TIFF or its directory lies beyond what was read."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return None
    ifd = struct.unpack(order + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return None
    tags: dict[int, int] = {}
    for n in range(struct.unpack(order + "H", data[ifd : ifd + 2])[0]):
        entry = data[ifd + 2 + 12 * n : ifd + 14 + 12 * n]
        if len(entry) < 12:
            break
        tag, kind, count = struct.unpack(order + "HHI", entry[:8])
        if kind == 3 and count <= 2:  # SHORTs held in the entry itself
            tags[tag] = struct.unpack(order + "H", entry[8:10])[0]
        elif kind == 3:  # SHORTs elsewhere: the first of them
            offset = struct.unpack(order + "I", entry[8:12])[0]
            if offset + 2 <= len(data):
                tags[tag] = struct.unpack(order + "H", data[offset : offset + 2])[0]
        elif kind == 4:
            tags[tag] = struct.unpack(order + "I", entry[8:12])[0]
    return tags


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as the file's header states it, read without decoding; None when the
    format or its header is not recognised (the decoder then decides)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return big_endian(data, 16, 4), big_endian(data, 20, 4)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # OS/2 core header: 16-bit sides
            return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
        return abs(struct.unpack("<i", data[18:22])[0]), abs(struct.unpack("<i", data[22:26])[0])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    return _tiff_size(data)


def header_storage(data: bytes) -> tuple[int, bool] | None:
    """``(bits per sample, has alpha)`` as the file's header states it, read without decoding; None
    when the header does not say (the decoder then tells, after decoding)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 26:
        return data[24], data[25] in (4, 6)
    if data[:2] == b"\xff\xd8":
        return 8, False
    if data[:2] == b"BM" and len(data) >= 30:
        return 8, int.from_bytes(data[28:30], "little") == 32
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 25:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 8, bool(data[20] & 0x10)
        if chunk == b"VP8L":
            return 8, bool(int.from_bytes(data[21:25], "little") >> 28 & 1)
        return 8, False
    return _tiff_storage(data)


def _tiff_storage(data: bytes) -> tuple[int, bool] | None:
    """Bits per sample (32 for float samples) and alpha of a classic TIFF's first image."""
    tags = tiff_tags(data)
    if tags is None:
        return None
    bits = 32 if tags.get(339) == 3 else tags.get(258, 1)
    return bits, 338 in tags or tags.get(277, 1) in (2, 4)  # extra samples, or gray+1 / RGB+1 samples
