"""The examples under examples/ run as a user runs them, and do what they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from moce.data import SAMPLES

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.slow
def test_python_api_example_restores_an_array_a_file_a_folder_and_a_clip(tmp_path, tiny_pkg):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py"), str(tmp_path), str(tiny_pkg.root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "experts per adapter" in out.stdout and "exit code 0" in out.stdout
    assert "clip: 48 frames" in out.stdout and (tmp_path / "clip" / "sample_clip.mp4").is_file()
    samples = sorted(p.name for p in SAMPLES.glob("*.png"))
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == samples
    assert (
        cv2.imread(str(tmp_path / "file" / "chelsea_haze.png")).shape
        == cv2.imread(str(SAMPLES / "chelsea_haze.png")).shape
    )
    assert (tmp_path / "file" / "chelsea_haze.png").read_bytes() == (
        tmp_path / "folder" / "chelsea_haze.png"
    ).read_bytes()
    assert json.loads((tmp_path / "report.json").read_text())["totals"]["ok"] == len(samples)
