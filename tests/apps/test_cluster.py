"""`moce restore --cluster`: the same outputs and report on a local Ray (2 CPUs, loopback only)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.apps.cluster import local_path, restore_on_cluster
from moce.apps.restore import RestoreJob, restore
from moce.cli.main import app
from moce.errors import InputError

ray = pytest.importorskip("ray", reason="needs ray[data]: pip install 'moce[cluster]'")


@pytest.fixture(scope="module")
def local_ray():
    yield
    ray.shutdown()


def _folder(root: Path) -> None:
    root.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        cv2.imwrite(str(root / f"img{i}.png"), (rng.random((40 + 8 * i, 48, 3)) * 255).astype(np.uint8))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    (root / "notes.txt").write_text("not an image")


def test_ray_restores_like_a_local_run_and_resumes(tmp_path, tiny_pkg, local_ray):
    _folder(tmp_path / "in")
    local = restore(RestoreJob(tmp_path / "in", tmp_path / "local", tiny_pkg.root, "onnxruntime", threads=1))
    uri = f"file://{tmp_path / 'in'}"
    args = ["restore", uri, str(tmp_path / "out"), "-m", str(tiny_pkg.root), "--backend", "onnxruntime"]
    result = CliRunner().invoke(
        app, [*args, "--cluster", "local", "--workers", "2", "--report", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 1, result.output  # the broken file, reported; the others restored
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"img{i}.png" for i in range(4)]
    for path in (tmp_path / "local").iterdir():
        assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes(), path.name  # bit-identical
    report = json.loads((tmp_path / "r.json").read_text())
    mine = {Path(i["input"]).name: (i["status"], i["reason"]) for i in report["images"]}
    theirs = {Path(r.input).name: (r.status, r.reason) for r in local.records}
    assert mine == theirs and mine["broken.png"][0] == "error" and mine["notes.txt"][0] == "skipped"
    assert report["totals"]["ok"] == 4 and "broken.png" in result.output
    again = restore_on_cluster(RestoreJob(tmp_path / "in", tmp_path / "out", tiny_pkg.root, "onnxruntime"))
    assert sorted(Path(r.input).name for r in again.skipped if r.reason.startswith("output exists")) == [
        f"img{i}.png" for i in range(4)
    ]


def test_only_local_paths_and_file_uris_are_read():
    assert local_path("file:///data/in") == Path("/data/in") and local_path("in") == Path("in")
    with pytest.raises(InputError, match="s3://bucket/in: only local paths and file:// URIs"):
        local_path("s3://bucket/in")
