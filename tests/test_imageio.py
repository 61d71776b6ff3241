"""Image files: every supported format and depth round-trips; broken files name the problem."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from moce import files
from moce.errors import InputError
from moce.image_headers import header_size
from moce.imageio import from_rgb_float, image_files, read_image, write_image_atomic


@pytest.mark.parametrize(
    ("suffix", "dtype", "channels"),
    [
        (".png", np.uint8, 3),
        (".png", np.uint16, 3),
        (".png", np.uint8, 1),
        (".png", np.uint16, 4),
        (".tif", np.uint16, 3),
        (".tif", np.float32, 3),
        (".bmp", np.uint8, 3),
        (".webp", np.uint8, 3),
        (".jpg", np.uint8, 3),
        (".jpg", np.uint8, 1),
    ],
)
def test_round_trip_keeps_depth_channels_and_alpha(tmp_path, suffix, dtype, channels):
    rng = np.random.default_rng(0)
    peak = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    shape = (20, 30) if channels == 1 else (20, 30, channels)
    data = (rng.random(shape) * peak).astype(dtype)
    path = tmp_path / f"in{suffix}"
    assert cv2.imwrite(str(path), data)
    rgb, info = read_image(path)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1
    out = from_rgb_float(rgb, info, suffix)
    assert out.dtype == dtype and out.shape == shape
    if suffix not in (".jpg", ".webp"):  # lossless formats give the pixels back exactly
        np.testing.assert_array_equal(out, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    if channels == 4:
        np.testing.assert_array_equal(out[..., 3], data[..., 3])


def test_sixteen_bit_to_jpeg_becomes_eight_bit(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((8, 8, 3), 65535, np.uint16))
    rgb, info = read_image(path)
    assert from_rgb_float(rgb, info, ".jpg").dtype == np.uint8


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty file"),
        ("text.jpg", b"hello world", "cannot decode"),
        ("notes.txt", b"hello", "unsupported file type"),
    ],
)
def test_bad_files_raise_input_errors_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_detected(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    cv2.imwrite(str(good), (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8))
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(bad)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.png"

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError):
        write_image_atomic(target, np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_image_files_are_the_supported_files_of_a_folder_by_name(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", "c.tif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "d.png").mkdir()
    assert [p.name for p in image_files(tmp_path, "photos")] == ["a.JPG", "b.png", "c.tif"]
    assert [p.name for p in image_files(tmp_path, "photos", exclude=("b",))] == ["a.JPG", "c.tif"]


def test_a_folder_without_images_is_one_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path}: no photos"):
        image_files(tmp_path, "photos")
    with pytest.raises(InputError, match="not a folder of images"):
        image_files(tmp_path / "missing", "photos")


@pytest.mark.parametrize(
    ("suffix", "dtype"),
    [(s, np.uint8) for s in (".png", ".jpg", ".bmp", ".webp", ".tif")] + [(".png", np.uint16), (".tif", np.uint16)],
)
def test_the_header_gives_the_size_without_decoding(suffix, dtype):
    ok, encoded = cv2.imencode(suffix, np.zeros((23, 37, 3), dtype))
    assert ok and header_size(encoded.tobytes()) == (37, 23)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header with the given size and a little pixel data (IHDR only; the decoder must fail)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (  # noqa: E731
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_header_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(30_000, 30_000))
    with pytest.raises(InputError, match=r"bomb.png: image is 30000x30000 \(900.0 MP\), over the limit of 64 MP"):
        read_image(path)


def test_decoder_errors_are_input_errors_naming_the_file(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(70_000, 70_000))  # past OpenCV's own limit: cv2.error inside imdecode
    with pytest.raises(InputError, match="huge.png: cannot decode as PNG"):
        read_image(path, max_pixels=10**12)


def test_a_decoded_image_over_the_limit_is_refused_too(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(InputError, match="30x20"):
        read_image(path, max_pixels=500)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_float_images_with_non_finite_pixels_are_refused(tmp_path, value):
    data = np.full((16, 16, 3), 0.5, np.float32)
    data[3, 4, 1] = value
    path = tmp_path / "f.tif"
    assert cv2.imwrite(str(path), data)
    with pytest.raises(InputError, match="f.tif: holds NaN or infinite pixel values"):
        read_image(path)


def test_length_fields_past_the_end_are_refused_before_the_decoder_allocates_them(tmp_path):
    ok, encoded = cv2.imencode(".png", np.zeros((20, 8, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    idat = data.index(b"IDAT") - 4
    data[idat : idat + 4] = (3_070_230_719).to_bytes(4, "big")  # OpenCV once allocated 3 GB for this
    (tmp_path / "a.png").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"a.png: truncated or corrupt PNG \(chunk b'IDAT' claims 3070230719 bytes"):
        read_image(tmp_path / "a.png")
    ok, encoded = cv2.imencode(".webp", np.zeros((20, 8, 3), np.uint8))
    (tmp_path / "b.webp").write_bytes(encoded.tobytes()[:-10])
    with pytest.raises(InputError, match="b.webp: truncated or corrupt RIFF/WebP"):
        read_image(tmp_path / "b.webp")


def test_folders_of_images_pass_over_hidden_and_empty_files(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # what macOS leaves beside a photo
    (tmp_path / "empty.png").write_bytes(b"")
    assert [p.name for p in image_files(tmp_path, "images")] == ["a.png"]
