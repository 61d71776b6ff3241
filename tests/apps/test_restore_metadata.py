"""Restored photos keep what they carried: EXIF (orientation included), ICC profiles, and the
input's kind of compression. Outputs are read back with other code than the writer's: OpenCV for
the orientation, and a PNG chunk reader here for the ICC profile."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from moce.cli.main import app
from moce.image_headers import tiff_tags


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)]).astype(np.uint8)


def _restore(tiny_pkg, source: Path, out: Path, *extra: str) -> None:
    args = ["restore", str(source), str(out), "-m", str(tiny_pkg.root), "--backend", "onnxruntime", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    chunks, i = {}, 8
    while i < len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        chunks[data[i + 4 : i + 8]] = data[i + 8 : i + 8 + length]
        i += 12 + length
    return chunks


def test_a_jpeg_keeps_its_exif_orientation_camera_tags_and_quality(tmp_path, tiny_pkg):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    exif[0x010F] = "moce test camera"
    Image.fromarray(_photo()).save(tmp_path / "in.jpg", quality=80, exif=exif.tobytes())
    _restore(tiny_pkg, tmp_path / "in.jpg", tmp_path / "out")
    out = tmp_path / "out" / "in.jpg"
    stored = cv2.imread(str(out), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    shown = cv2.imread(str(out), cv2.IMREAD_COLOR)  # OpenCV applies the EXIF orientation
    assert stored.shape == (48, 64, 3) and shown.shape == (64, 48, 3)  # restored as stored, shown rotated
    data = out.read_bytes()
    assert b"Exif\0\0" in data and b"moce test camera" in data
    with Image.open(out) as image:
        assert image.getexif()[0x0112] == 6
    assert len(data) < 1.3 * (tmp_path / "in.jpg").stat().st_size  # quality 80 kept, not 95


def test_quality_sets_the_jpeg_quality(tmp_path, tiny_pkg):
    Image.fromarray(_photo(96, 128)).save(tmp_path / "in.jpg", quality=90)
    _restore(tiny_pkg, tmp_path / "in.jpg", tmp_path / "low", "--quality", "30")
    _restore(tiny_pkg, tmp_path / "in.jpg", tmp_path / "kept")
    assert (tmp_path / "low" / "in.jpg").stat().st_size < 0.8 * (tmp_path / "kept" / "in.jpg").stat().st_size


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_png_keeps_its_icc_profile_at_any_depth(tmp_path, tiny_pkg, dtype):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = _photo().astype(dtype) * (257 if dtype == np.uint16 else 1)
    encoded = cv2.imencode(".png", image[:, :, ::-1])[1].tobytes()
    header = 8 + 12 + int.from_bytes(encoded[8:12], "big")
    iccp = b"iCCP" + b"test\0\0" + zlib.compress(profile)
    chunk = (len(iccp) - 4).to_bytes(4, "big") + iccp + (zlib.crc32(iccp) & 0xFFFFFFFF).to_bytes(4, "big")
    (tmp_path / "in.png").write_bytes(encoded[:header] + chunk + encoded[header:])
    _restore(tiny_pkg, tmp_path / "in.png", tmp_path / "out")
    data = (tmp_path / "out" / "in.png").read_bytes()
    chunks = _png_chunks(data)
    assert zlib.decompress(chunks[b"iCCP"].split(b"\0", 2)[2]) == profile
    assert cv2.imread(str(tmp_path / "out" / "in.png"), cv2.IMREAD_UNCHANGED).dtype == dtype


def test_a_lossy_webp_stays_lossy_and_a_lossless_one_lossless(tmp_path, tiny_pkg):
    (tmp_path / "in").mkdir()
    Image.fromarray(_photo(96, 128)).save(tmp_path / "in" / "lossy.webp", quality=80)
    Image.fromarray(_photo(96, 128)).save(tmp_path / "in" / "lossless.webp", lossless=True)
    _restore(tiny_pkg, tmp_path / "in", tmp_path / "out")
    assert b"VP8 " in (tmp_path / "out" / "lossy.webp").read_bytes()[12:64]
    assert b"VP8L" in (tmp_path / "out" / "lossless.webp").read_bytes()[12:64]
    with Image.open(io.BytesIO((tmp_path / "out" / "lossy.webp").read_bytes())) as image:
        assert image.size == (128, 96)


@pytest.mark.parametrize("output", ["out", "out.jpg"])
def test_a_tiff_keeps_its_orientation_camera_tags_and_icc_profile(tmp_path, tiny_pkg, output):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "moce tiff camera"
    exif.get_ifd(0x8769)[0x9003] = "2026:01:02 03:04:05"  # DateTimeOriginal, in the camera directory
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(_photo()).save(tmp_path / "in.tif", exif=exif.tobytes(), icc_profile=icc)
    _restore(tiny_pkg, tmp_path / "in.tif", tmp_path / output)
    out = tmp_path / output if output.endswith(".jpg") else tmp_path / output / "in.tif"
    data = out.read_bytes()
    assert b"moce tiff camera" in data and b"2026:01:02 03:04:05" in data and icc in data
    # OpenCV turns a TIFF upright as it reads it: the pixels are restored upright, with no turn to show
    if out.suffix == ".tif":  # read back with moce's own TIFF directory walker, not Pillow
        tags = tiff_tags(data)
        assert tags.get(0x0112, 1) == 1 and (tags[257], tags[256]) == (64, 48) and 0x8769 in tags
    else:
        stored = cv2.imread(str(out), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        shown = cv2.imread(str(out), cv2.IMREAD_COLOR)  # OpenCV applies an EXIF orientation here
        assert stored.shape == shown.shape == (64, 48, 3)
