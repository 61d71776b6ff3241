"""Restoring clips: nothing but the picture changes, routes hold per shot, and a clip that fails or
is interrupted leaves nothing behind while the other inputs go on."""

from __future__ import annotations

import json
import signal
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import moce
from moce.apps.clips import ClipSpec, synthesize_clip
from moce.apps.job import RestoreJob
from moce.apps.restore import restore
from moce.apps.session_options import SessionOptions
from moce.apps.shots import route_per_of
from moce.apps.stop import StopRequest
from moce.apps.video import VideoInterrupted, VideoOptions
from moce.errors import InputError
from moce.progress import NoProgress
from moce.videoio import frame_to_rgb, probe, rgb_to_frame

FAST = {"backend": "onnxruntime", "threads": 1}


@pytest.fixture(scope="module")
def session(tiny_pkg):
    with moce.open(tiny_pkg.root, **FAST) as opened:
        yield opened


def streams(path: Path) -> dict:
    """Everything of a clip that restoring must keep: timing, tags, sound and metadata."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video=0))
        out = {
            "pts": [f.pts for f in frames],
            "time_base": video.time_base,
            "rotation": {f.rotation for f in frames},
            "tags": {(f.colorspace, f.color_range, f.color_primaries, f.color_trc) for f in frames},
            "pix_fmt": {f.format.name for f in frames},
            "title": container.metadata.get("title"),
            "languages": [s.metadata.get("language") for s in container.streams.audio],
        }
    with av.open(str(path)) as container:
        out["audio"] = [bytes(p) for p in container.demux(audio=0) if p.size] if container.streams.audio else []
    out["duration"] = probe(path).duration
    return out


def decoded(path: Path) -> list[np.ndarray]:
    info = probe(path)
    with av.open(str(path)) as container:
        return [frame_to_rgb(f, info.colour) for f in container.decode(video=0)]


KEPT = {
    "vfr, rotated, BT.709 limited, AAC": ("clip.mp4", ClipSpec(frames_per_shot=12, vfr=True, rotation=90)),
    "10-bit": ("deep.mp4", ClipSpec(frames_per_shot=8, pix_fmt="yuv420p10le")),
    "BT.601 full range, Matroska": ("sd.mkv", ClipSpec(frames_per_shot=8, colorspace=6, color_range=2)),
}


@pytest.mark.parametrize("case", list(KEPT))
def test_nothing_but_the_picture_changes(session, tmp_path, case):
    name, spec = KEPT[case]
    clip = synthesize_clip(tmp_path / name, spec)
    out = tmp_path / "out" / name
    result = session.restore_video(clip, out)
    before, after = streams(clip), streams(out)
    assert result.frames == len(before["pts"]) == len(after["pts"])
    for key in ("pts", "time_base", "rotation", "tags", "pix_fmt", "title", "languages", "audio"):
        assert after[key] == before[key], key
    tick = float(before["time_base"])  # Matroska's DURATION tag is rounded to its millisecond ticks
    assert after["duration"] == pytest.approx(before["duration"], abs=tick + 1e-9)
    if spec.vfr:
        assert len(set(np.diff(before["pts"]))) == 2  # the clip really is variable-rate
    assert before["audio"] or not spec.audio
    assert not np.allclose(decoded(out)[3], decoded(clip)[3], atol=0.01)  # the picture did change


def test_a_frame_in_a_clip_equals_the_image_restore_with_the_shots_route(session, tmp_path):
    """Lossless FFV1, so the only difference is the YUV round trip of the restored frame (measured in
    tests/test_videoio.py): video restore adds nothing of its own."""
    clip = synthesize_clip(tmp_path / "c.mkv", ClipSpec(frames_per_shot=12, encoder="ffv1"))
    out = tmp_path / "o.mkv"
    result = session.restore_video(clip, out)
    (shot,) = result.shots
    info = probe(clip)
    restored = decoded(out)
    for index, rgb in enumerate(decoded(clip)):
        image = session.restore_rgb([rgb], route=shot.route)[0].restored
        through_yuv = frame_to_rgb(rgb_to_frame(image, info.colour, info.pix_fmt), info.colour)
        assert np.abs(restored[index] - through_yuv).max() <= 1 / 255


def test_one_route_per_shot_and_one_change_at_the_cut(demo_pkg, tmp_path):
    """A noisy shot, then a hazy one: per frame, routes flicker inside shots; per shot, each shot takes
    the route most of its frames take alone, and the route changes once, at the cut."""
    clip = synthesize_clip(
        tmp_path / "two.mp4", ClipSpec(shots=(("coffee", "noise25"), ("chelsea", "haze")), frames_per_shot=24)
    )
    with moce.open(demo_pkg.root, **FAST) as demo:
        alone = demo.restore_video(clip, tmp_path / "frame.mp4", route_per="frame")
        steady = demo.restore_video(clip, tmp_path / "shot.mp4", route_per="shot")
    assert [(s.first, s.last) for s in steady.shots] == [(0, 23), (24, 47)]
    assert steady.route_changes == 1 and steady.routes[23] != steady.routes[24]
    for shot in steady.shots:
        inside = steady.routes[shot.first : shot.last + 1]
        assert set(inside) == {shot.route}
        majority = Counter(alone.routes[shot.first : shot.last + 1]).most_common(1)[0][0]
        assert shot.route == majority
    assert steady.shots[0].route != steady.shots[1].route


class StopAfter(NoProgress):
    """Progress that asks a run to stop after ``frames`` frames, as Ctrl-C would."""

    def __init__(self, stop: StopRequest, frames: int) -> None:
        self.stop, self.left = stop, frames

    def frame_done(self, count: int) -> None:
        self.left -= count
        if self.left <= 0 and not self.stop.requested:
            self.stop(signal.SIGINT)


def test_an_interrupted_clip_leaves_nothing_and_the_rerun_equals_an_uninterrupted_run(session, tmp_path):
    clip = synthesize_clip(tmp_path / "in" / "c.mkv", ClipSpec(frames_per_shot=16, encoder="ffv1"))
    out = tmp_path / "out"
    stop = StopRequest()
    with pytest.raises(VideoInterrupted) as caught:
        session.restore_video(clip, out / "c.mkv", progress=StopAfter(stop, 5), stop=stop)
    assert 5 <= caught.value.frames < 16
    assert not out.exists() or list(out.iterdir()) == []  # nothing under the final name, no temporary
    session.restore_video(clip, out / "c.mkv")
    session.restore_video(clip, tmp_path / "whole.mkv")
    for a, b in zip(decoded(out / "c.mkv"), decoded(tmp_path / "whole.mkv"), strict=True):
        assert np.array_equal(a, b)


def test_an_interrupted_run_reports_the_frames_done(tiny_pkg, tmp_path):
    clip = synthesize_clip(tmp_path / "in" / "c.mp4", ClipSpec(frames_per_shot=16))
    stop = StopRequest()
    report = tmp_path / "report.json"
    job = RestoreJob(clip, tmp_path / "out", model=tiny_pkg.root, session=SessionOptions(**FAST), report=report)
    summary = restore(job, StopAfter(stop, 4), stop=stop)
    assert summary.exit_code == 130
    (record,) = json.loads(report.read_text())["images"]
    assert record["status"] == "not_processed" and "interrupted after" in record["reason"]
    assert 4 <= record["frames"] < 16 and "of 16 frames, nothing written" in record["reason"]
    assert not (tmp_path / "out" / "c.mp4").exists()


def test_bad_clips_fail_alone_with_a_line_naming_the_frame_time(tiny_pkg, tmp_path):
    folder = tmp_path / "in"
    synthesize_clip(folder / "good.mp4", ClipSpec(frames_per_shot=8))
    whole = synthesize_clip(tmp_path / "whole.mkv", ClipSpec(frames_per_shot=30)).read_bytes()
    (folder / "cut.mkv").write_bytes(whole[: len(whole) * 6 // 10])
    broken = bytearray(synthesize_clip(tmp_path / "whole.mp4", ClipSpec(frames_per_shot=30)).read_bytes())
    for i in range(len(broken) // 3, len(broken) // 3 + 3000, 7):
        broken[i] = (broken[i] * 31 + 17) % 256
    (folder / "broken.mp4").write_bytes(bytes(broken))
    (folder / "sound.mp4").write_bytes(b"\0\0\0\x18ftypisom" + bytes(64))
    cv2.imwrite(str(folder / "photo.png"), np.full((64, 64, 3), 128, np.uint8))
    job = RestoreJob(folder, tmp_path / "out", model=tiny_pkg.root, session=SessionOptions(**FAST))
    summary = restore(job)
    by_name = {Path(r.input).name: r for r in summary.records}
    assert by_name["good.mp4"].status == "ok" and by_name["photo.png"].status == "ok"
    assert by_name["good.mp4"].frames == 8
    assert "truncated: frames end at" in by_name["cut.mkv"].error
    assert "broken.mp4: corrupt after the frame at" in by_name["broken.mp4"].error
    assert "sound.mp4: cannot be read as a video" in by_name["sound.mp4"].error
    assert all("\n" not in r.error for r in summary.failed) and summary.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mp4", "photo.png"]


def test_clips_are_refused_before_work_when_the_encoder_cannot_write_them(tiny_pkg, tmp_path):
    clip = synthesize_clip(tmp_path / "c.webm", ClipSpec(frames_per_shot=4, encoder="libvpx-vp9", audio=False))
    job = RestoreJob(
        clip,
        tmp_path / "out",
        model=tiny_pkg.root,
        session=SessionOptions(**FAST),
        video=VideoOptions(codec="h264"),
    )
    with pytest.raises(InputError, match="c.webm: a webm file cannot hold libx264; choose --codec"):
        restore(job)
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_skipped_and_the_api_refuses_to_replace_it(session, tmp_path):
    clip = synthesize_clip(tmp_path / "c.mp4", ClipSpec(frames_per_shot=4))
    out = tmp_path / "o.mp4"
    out.write_bytes(b"mine")
    with pytest.raises(InputError, match="exists; pass overwrite=True"):
        session.restore_video(clip, out)
    with pytest.raises(InputError, match="is the input"):
        session.restore_video(clip, clip, overwrite=True)
    assert out.read_bytes() == b"mine"
    session.restore_video(clip, out, overwrite=True)
    assert probe(out).frames == 4


def test_a_route_per_shot_needs_the_split_plan_and_frames_route_alone_otherwise(tiny_pkg, tmp_path):
    clip = synthesize_clip(tmp_path / "c.mp4", ClipSpec(frames_per_shot=4))
    with moce.open(tiny_pkg.root, routing="dense", **FAST) as dense:
        with pytest.raises(InputError, match="--route-per shot: imposing one route on many frames needs"):
            dense.restore_video(clip, tmp_path / "shot.mp4")
        assert dense.restore_video(clip, tmp_path / "frame.mp4", route_per="frame").frames == 4
    assert not (tmp_path / "shot.mp4").exists()
    assert route_per_of(None, "dense") == ("image", "frame") and route_per_of("tile") == ("tile", "frame")


def test_frames_over_max_pixels_are_refused_before_work_like_images(tiny_pkg, tmp_path):
    clip = synthesize_clip(tmp_path / "c.mp4", ClipSpec(frames_per_shot=3))
    with moce.open(tiny_pkg.root, max_pixels=10_000, **FAST) as small:
        with pytest.raises(InputError, match=r"c\.mp4: each frame is 128x96 \(12,288 pixels\), over the limit"):
            small.restore_video(clip, tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def with_subtitles(clip: Path, out: Path, lines: list[bytes]) -> Path:
    """``clip`` remuxed with a German mov_text subtitle track, one line every 200 ms."""
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        copies = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        track = dst.add_mux_stream("mov_text")
        track.time_base, track.metadata["language"] = Fraction(1, 1000), "ger"
        for i, line in enumerate(lines):
            packet = av.Packet(len(line).to_bytes(2, "big") + line)
            packet.stream, packet.time_base = track, Fraction(1, 1000)
            packet.pts = packet.dts = 200 * i
            packet.duration = 150
            dst.mux(packet)
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = copies[packet.stream.index]
                dst.mux(packet)
    return out


def test_subtitles_are_copied_line_for_line_with_their_language(session, tmp_path):
    clip = synthesize_clip(tmp_path / "plain.mp4", ClipSpec(frames_per_shot=12))
    titled = with_subtitles(clip, tmp_path / "titled.mp4", [b"Hallo", b"Welt"])
    session.restore_video(titled, tmp_path / "out.mp4")

    def lines(path: Path) -> tuple[list, list]:
        with av.open(str(path)) as container:
            track = container.streams.subtitles[0]
            language = track.metadata.get("language")
            # mov_text fills gaps with empty samples, which the muxer writes as it sees fit
            return [(bytes(p), p.pts, p.duration) for p in container.demux(track) if p.size > 2], language

    assert lines(tmp_path / "out.mp4") == lines(titled) == ([(b"\0\5Hallo", 0, 150), (b"\0\4Welt", 200, 150)], "ger")
