"""`moce restore` on the bundled sample clip, as a user runs it: the clip beside a photo, a rerun,
and a clip option refused in one line before work."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from moce.cli.main import app
from moce.data import SAMPLE_CLIP, SAMPLES
from moce.videoio import probe

CLIP = SAMPLE_CLIP


def test_restore_takes_the_sample_clip_beside_a_photo_and_a_rerun_skips_both(tmp_path, tiny_pkg):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(CLIP, inputs / "clip.mp4")
    shutil.copy(SAMPLES / "coffee_rain.png", inputs / "photo.png")
    out, report = tmp_path / "out", tmp_path / "report.json"
    args = ["restore", str(inputs), str(out), "-m", str(tiny_pkg.root), "--threads", "1", "--report", str(report)]
    first = CliRunner().invoke(app, [*args, "--batch", "2"])
    assert first.exit_code == 0, first.output
    assert probe(out / "clip.mp4").frames == probe(CLIP).frames == 48
    saved = json.loads(report.read_text())
    clip = next(r for r in saved["images"] if r["input"].endswith("clip.mp4"))
    assert clip["status"] == "ok" and clip["frames"] == 48 and saved["totals"]["frames"] == 48
    assert [(s["first_frame"], s["last_frame"]) for s in clip["shots"]] == [(0, 23), (24, 47)]
    assert clip["video"]["encoder"] == "libx264" and clip["video"]["route_changes"] <= 1
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "skipped 2 image(s) whose output exists" in again.output


def test_a_clip_option_the_encoder_cannot_take_is_refused_before_work(tmp_path, tiny_pkg):
    out = tmp_path / "out"
    args = ["restore", str(CLIP), str(out), "-m", str(tiny_pkg.root), "--codec", "ffv1", "--crf", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and not out.exists()
    assert result.output.strip().splitlines()[-1] == f"error: {CLIP}: --crf does not apply to ffv1"


def test_a_clip_named_as_an_image_is_refused_before_work_lossy_or_not(tmp_path, tiny_pkg):
    for extra in ([], ["--allow-lossy"]):
        out = tmp_path / "frame.png"
        result = CliRunner().invoke(app, ["restore", str(CLIP), str(out), "-m", str(tiny_pkg.root), *extra])
        assert result.exit_code == 2 and not out.exists()
        assert (
            result.output.strip().splitlines()[-1]
            == f"error: {out}: {CLIP} is a clip; name a video file (.mp4, .mkv, ...) or a folder"
        )
