"""The video scripts: the sample clip is remade as bundled, and the route timeline draws each frame's
expert where it belongs and refuses to replace a file it did not write."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from moce.apps.evaluate import PALETTE
from moce.videoio import probe

SCRIPTS = Path(__file__).parents[2] / "scripts"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_timeline_colours_each_frame_by_its_expert_per_adapter():
    flicker = load("video_flicker")
    a, b = ((0,), (1,), (2,)), ((3,), (1,), (0,))
    img = flicker.timeline({"frame": [a, b, a, a], "shot": [a, a, b, b]}, [2], "title")
    step, line, left, top = 900 // 4, 14, 170, 46
    pixel = lambda band, adapter, frame: tuple(  # noqa: E731
        img[top + band * (3 * line + 26) + adapter * line + 5, left + frame * step + step // 2]
    )
    assert pixel(0, 0, 1) == PALETTE[3] and pixel(0, 2, 1) == PALETTE[0] and pixel(0, 2, 0) == PALETTE[2]
    assert pixel(1, 0, 1) == PALETTE[0] and pixel(1, 0, 3) == PALETTE[3]


def test_the_flicker_script_refuses_a_chart_path_it_did_not_write(tmp_path):
    mine = tmp_path / "routes.png"
    mine.write_bytes(b"a user's picture")
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "video_flicker.py"), "--chart", str(mine)], capture_output=True, text=True
    )
    assert run.returncode == 1 and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1
    assert "routes.png" in run.stderr and "was not written by" in run.stderr
    assert mine.read_bytes() == b"a user's picture"


@pytest.mark.slow
def test_the_sample_clip_script_makes_the_bundled_clip_and_never_replaces_one(tmp_path):
    made = tmp_path / "clip.mp4"
    subprocess.run([sys.executable, str(SCRIPTS / "make_sample_clip.py"), str(made)], check=True)
    bundled = Path(__file__).parents[2] / "moce" / "data" / "sample_clip.mp4"
    assert probe(made).frames == probe(bundled).frames == 48 and probe(made).streams == ("video", "audio")
    again = subprocess.run([sys.executable, str(SCRIPTS / "make_sample_clip.py"), str(made)], capture_output=True)
    assert again.returncode != 0 and b"exists" in again.stderr
    assert np.isclose(probe(made).duration, probe(bundled).duration)
