"""Video files in and out: what a clip holds, the encoder chosen for it, and the YUV <-> RGB
conversion in the clip's own matrix and range."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from moce.apps.clips import ClipSpec, synthesize_clip
from moce.errors import InputError
from moce.videoio import choose_encoding, frame_to_rgb, is_video, is_video_head, probe, rgb_to_frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return synthesize_clip(tmp_path_factory.mktemp("clips") / "pan.mp4", ClipSpec(frames_per_shot=6, rotation=90))


def test_probe_reads_the_stream_its_tags_and_rotation(clip):
    info = probe(clip)
    assert (info.codec, info.width, info.height, info.pix_fmt, info.depth) == ("h264", 128, 96, "yuv420p", 8)
    assert (info.frames, info.rotation, info.colour.colorspace, info.colour.color_range) == (6, 90, 1, 1)
    assert info.colour.matrix == "ITU709" and info.streams == ("video", "audio")
    assert info.duration == pytest.approx(6 / 24)


def test_video_files_are_known_by_content_as_well_as_by_suffix(clip, tmp_path):
    renamed = tmp_path / "clip.dat"
    renamed.write_bytes(clip.read_bytes())
    (tmp_path / "notes.dat").write_text("not a clip")
    assert is_video(renamed) and not is_video(tmp_path / "notes.dat")
    assert is_video_head(b"\x1a\x45\xdf\xa3" + bytes(12)) and is_video_head(b"RIFF\0\0\0\0AVI LIST")
    assert not is_video(tmp_path / "photo.png")


def test_a_file_with_no_video_stream_or_no_video_is_refused_in_one_line(tmp_path):
    sound = tmp_path / "sound.mp4"
    with av.open(str(sound), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(InputError, match=r"sound\.mp4: has no video stream"):
        probe(sound)
    fake = tmp_path / "fake.mp4"
    fake.write_text("hello")
    with pytest.raises(InputError, match=r"fake\.mp4: cannot be read as a video") as caught:
        probe(fake)
    assert "\n" not in str(caught.value)


def test_the_encoder_follows_the_input_the_codec_asked_and_the_container(clip):
    info = probe(clip)
    assert choose_encoding(info, "mp4").encoder == "libx264"
    assert choose_encoding(info, "mp4").crf == 18
    lossless = choose_encoding(info, "matroska", "ffv1")
    assert (lossless.encoder, lossless.crf, lossless.options) == ("ffv1", None, {})
    silent = replace(info, copied=())
    assert choose_encoding(silent, "webm", "vp9").options == {"crf": "24", "b": "0"}
    with pytest.raises(InputError, match=r"its audio \(aac\) cannot be copied into a webm file"):
        choose_encoding(info, "webm", "vp9")
    with pytest.raises(InputError, match="cannot hold libx264"):
        choose_encoding(info, "webm", "h264")
    with pytest.raises(InputError, match="--crf does not apply to ffv1"):
        choose_encoding(info, "matroska", "ffv1", crf=10)
    with pytest.raises(InputError, match="--crf 60: libx264 takes 0 to 51"):
        choose_encoding(info, "mp4", crf=60)
    with pytest.raises(InputError, match="no nonesuch encoder"):
        choose_encoding(info, "mp4", "nonesuch")


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le", "bgr0"])
@pytest.mark.parametrize("colorspace", [1, 6])
def test_rgb_round_trips_through_the_clips_matrix_range_and_depth(tmp_path, pix_fmt, colorspace):
    """The YUV round trip's bound, measured: quantisation plus 4:2:0 chroma on a detailed photo, about
    1.6/255 on average (no bias), up to 15/255 on colour edges."""
    clip = synthesize_clip(
        tmp_path / "c.mkv",
        ClipSpec(frames_per_shot=2, encoder="ffv1", pix_fmt=pix_fmt, colorspace=colorspace, audio=False),
    )
    info = probe(clip)
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
    rgb = frame_to_rgb(frame, info.colour)
    again = frame_to_rgb(rgb_to_frame(rgb, info.colour, info.pix_fmt), info.colour)
    error = np.abs(again - rgb)
    assert again.dtype == np.float32 and rgb.shape == (96, 128, 3)
    assert abs((again - rgb).mean()) < 0.001 and error.mean() < 0.01 and error.max() < 0.1
    if pix_fmt.endswith("10le"):  # 16 bits in the restored path, not 8
        assert len(np.unique(rgb)) > 256


def test_reading_with_the_wrong_matrix_would_shift_colours(tmp_path):
    """BT.601 and BT.709 differ on saturated colours: the clip's tag is what keeps them."""
    clip = synthesize_clip(tmp_path / "c.mkv", ClipSpec(frames_per_shot=2, encoder="ffv1", colorspace=6, audio=False))
    info = probe(clip)
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
    right = frame_to_rgb(frame, info.colour)
    wrong = frame_to_rgb(frame, replace(info.colour, colorspace=1))
    assert np.abs(right - wrong).max() > 0.02
