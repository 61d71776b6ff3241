"""A seeded corpus of broken and unusual image files, for the restore fuzz test and scripts/fuzz_restore.py.

Each file starts from a small valid image in one of the supported formats, depths and channel
counts, then most are damaged: truncated, bytes flipped, header sizes forged, or given a name
that is hard to handle (spaces, unicode, a line break, near the file-system limit).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

FORMATS = (".png", ".jpg", ".bmp", ".webp", ".tif")
NAMES = ("plain", "with space", "ünïcødé", "line\nbreak", "tab\there", "n" * 200)


def _valid(rng: np.random.Generator, suffix: str) -> tuple[bytes, bool]:
    """A valid image file, and whether its pixels are all finite."""
    h, w = (int(v) for v in rng.integers(8, 48, size=2))
    dtype = np.uint16 if suffix in (".png", ".tif") and rng.random() < 0.3 else np.uint8
    if suffix == ".tif" and rng.random() < 0.2:
        dtype = np.float32
    channels = int(rng.choice([1, 3, 4] if suffix in (".png", ".tif") else [1, 3]))
    peak = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    shape = (h, w) if channels == 1 else (h, w, channels)
    image = (rng.random(shape) * peak).astype(dtype)
    finite = not (dtype == np.float32 and rng.random() < 0.3)
    if not finite:
        image.flat[int(rng.integers(image.size))] = rng.choice([np.nan, np.inf])
    ok, encoded = cv2.imencode(suffix, image)
    assert ok, suffix
    return encoded.tobytes(), finite


def _forged_png(rng: np.random.Generator) -> bytes:
    side = int(rng.choice([0, 1, 7, 70_000, 2**31 - 1]))
    ihdr = struct.pack(">IIBBBBB", side, int(rng.integers(1, 2**16)), 8, int(rng.choice([0, 2, 3, 4, 6, 9])), 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + chunk(b"IEND", b"")
    )


def _damage(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    kind = str(
        rng.choice(["intact", "truncate", "flip", "header", "garbage", "empty"], p=[0.35, 0.2, 0.25, 0.1, 0.05, 0.05])
    )
    if kind == "truncate":
        return data[: int(rng.integers(1, len(data)))], kind
    if kind == "flip":
        raw = bytearray(data)
        for i in rng.integers(0, len(raw), size=int(rng.integers(1, 8))):
            raw[i] ^= int(rng.integers(1, 256))
        return bytes(raw), kind
    if kind == "header":
        return _forged_png(rng), kind
    if kind == "garbage":
        return rng.bytes(int(rng.integers(1, 4096))), kind
    if kind == "empty":
        return b"", kind
    return data, kind


def make_corpus(folder: Path, count: int, seed: int = 0) -> dict[str, str]:
    """Write ``count`` files into ``folder``; returns file name -> what was done to it ("intact" files
    are valid images moce must restore)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for i in range(count):
        suffix = str(rng.choice(FORMATS))
        valid, finite = _valid(rng, suffix)
        data, kind = _damage(rng, valid)
        kind = "non-finite" if kind == "intact" and not finite else kind
        name = f"{i:04d} {NAMES[i % len(NAMES)]}{suffix}" if rng.random() < 0.5 else f"{i:04d}{suffix}"
        (folder / name).write_bytes(data)
        made[name] = kind
    return made


_MEASURED = """
import atexit, os, sys
def _report():
    with open('/proc/self/status') as status, open(os.environ['MOCE_PEAK_FILE'], 'w') as out:
        out.write(next(line for line in status if line.startswith('VmHWM')).split()[1])
atexit.register(_report)
from moce.cli.main import main
sys.argv[0] = 'moce'
main()
"""


def run_moce_measured(args: list[str]) -> tuple[int, float]:
    """Run ``moce ARGS`` in a child process; its exit code and its own peak RSS in MB.

    The peak is the child's VmHWM after exec: the kernel's ``ru_maxrss`` of a child also counts the
    pages it shared with its parent between fork and exec (a test runner's gigabyte, say).
    """
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        env = {**os.environ, "MOCE_PEAK_FILE": str(peak)}
        done = subprocess.run([sys.executable, "-c", _MEASURED, *args], env=env, capture_output=True)
        return done.returncode, int(peak.read_text()) / 1024
