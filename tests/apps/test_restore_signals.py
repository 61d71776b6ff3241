"""A run ended by a signal tells the truth: the images in flight are finished, the report says the
run was interrupted and lists every file not reached, the exit code is 128 + the signal, and the
same command then completes the set with the outputs an uninterrupted run writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

IMAGES = 10
CLI = [sys.executable, "-c", "from moce.cli.main import main; main()"]


def _restore(inputs: Path, out: Path, package: Path, report: Path) -> list[str]:
    args = ["restore", str(inputs), str(out), "-m", str(package), "--backend", "onnxruntime", "--threads", "1"]
    return [*CLI, *args, "--tile", "96", "--overlap", "16", "--report", str(report)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, tiny_pkg):
    """The inputs, and their outputs from a run nobody interrupted."""
    root = tmp_path_factory.mktemp("signals")
    rng = np.random.default_rng(4)
    (root / "in").mkdir()
    for i in range(IMAGES):
        cv2.imwrite(str(root / "in" / f"p{i:02d}.png"), (rng.random((192, 224, 3)) * 255).astype(np.uint8))
    done = subprocess.run(_restore(root / "in", root / "whole", tiny_pkg.root, root / "whole.json"), check=False)
    assert done.returncode == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_honestly_and_the_same_command_completes_it(tmp_path, photos, tiny_pkg, signum):
    command = _restore(photos / "in", tmp_path / "out", tiny_pkg.root, tmp_path / "report.json")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((tmp_path / "out").glob("*.png"))) < 2 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)

    assert child.returncode == 128 + signum, err
    assert "Traceback" not in err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["interrupted"] is True and report["signal"] == signal.Signals(signum).name
    statuses = {Path(r["input"]).name: r["status"] for r in report["images"]}
    assert len(statuses) == IMAGES  # every file is accounted for
    left = sorted(name for name, status in statuses.items() if status == "not_processed")
    done = sorted(name for name, status in statuses.items() if status == "ok")
    assert left and done and len(left) + len(done) == IMAGES
    assert report["totals"]["not_processed"] == len(left)
    assert f"interrupted ({signal.Signals(signum).name}) after {len(done)} of {IMAGES} images" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == done  # nothing half-written

    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    for path in sorted((photos / "whole").iterdir()):
        assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes(), path.name
