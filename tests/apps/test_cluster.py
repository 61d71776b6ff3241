"""`moce restore --cluster`: the same outputs and report on a local Ray (2 CPUs, loopback only)."""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.apps.cluster import input_location, list_inputs, local_path, restore_on_cluster
from moce.apps.discovery import discover
from moce.apps.job import RestoreJob
from moce.apps.restore import restore
from moce.apps.session_options import SessionOptions
from moce.apps.stop import StopRequest
from moce.apps.video import VideoOptions
from moce.cli.main import app
from moce.data import SAMPLE_CLIP, SAMPLES
from moce.errors import InputError
from moce.package.store import cache_dir
from moce.progress import NoProgress

ray = pytest.importorskip("ray", reason="needs ray[data]: pip install 'moce[cluster]'")
pafs = pytest.importorskip("pyarrow.fs")


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
    local = restore(
        RestoreJob(tmp_path / "in", tmp_path / "local", tiny_pkg.root, SessionOptions(backend="onnxruntime", threads=1))
    )
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
    again = restore_on_cluster(
        RestoreJob(tmp_path / "in", tmp_path / "out", tiny_pkg.root, SessionOptions(backend="onnxruntime"))
    )
    assert sorted(Path(r.input).name for r in again.skipped if r.reason.startswith("output exists")) == [
        f"img{i}.png" for i in range(4)
    ]


def test_outputs_are_local_and_inputs_may_be_on_any_pyarrow_file_system(tmp_path):
    assert local_path("file:///data/in") == Path("/data/in") and local_path("in") == Path("in")
    with pytest.raises(InputError, match="s3://bucket/out: outputs, and inputs without --cluster, are local"):
        local_path("s3://bucket/out")
    assert input_location("in") == (None, Path("in"))
    filesystem, path = input_location(f"file://{tmp_path}")
    assert filesystem.type_name == "local" and path == tmp_path
    with pytest.raises(InputError, match="nosuch://x: not a file system URI pyarrow reads"):
        input_location("nosuch://x")
    with pytest.raises(InputError, match="need --cluster"):
        restore(RestoreJob(path, tmp_path / "out", filesystem=filesystem))


def test_listing_on_a_pyarrow_file_system_matches_the_local_one(tmp_path):
    root = tmp_path / "in"
    _folder(root)
    (root / "sub").mkdir()
    cv2.imwrite(str(root / "sub" / "deep.png"), np.zeros((16, 16, 3), np.uint8))
    (root / ".hidden.png").write_bytes(b"")
    filesystem, path = input_location(f"file://{root}")
    for recursive in (False, True):
        for include in ((), ("img1*", "sub/*")):
            assert list_inputs(filesystem, path, recursive, include) == discover(root, recursive, include)
    assert list_inputs(filesystem, path / "img0.png", False, ()) == (root, [root / "img0.png"], [])
    with pytest.raises(InputError, match="no such file or folder on local"):
        list_inputs(filesystem, path / "missing", False, ())


def test_ray_workers_restore_tiled_images_at_fp16_as_a_local_run_does(tmp_path, tiny_variants, local_ray):
    (tmp_path / "in").mkdir()
    image = (np.random.default_rng(9).random((72, 88, 3)) * 255).astype(np.uint8)  # larger than a tile
    cv2.imwrite(str(tmp_path / "in" / "big.png"), image)
    options = ["-m", str(tiny_variants.manifest.root), "--backend", "onnxruntime", "--precision", "fp16"]
    options += ["--tile", "32", "--overlap", "8", "--threads", "1"]
    local = CliRunner().invoke(app, ["restore", str(tmp_path / "in"), str(tmp_path / "local"), *options])
    assert local.exit_code == 0, local.output
    args = ["restore", str(tmp_path / "in"), str(tmp_path / "ray"), *options, "--cluster", "local", "--workers", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output  # was: "no fp16 graph 'tile_segment0'", exit 1
    assert (tmp_path / "ray" / "big.png").read_bytes() == (tmp_path / "local" / "big.png").read_bytes()


class _StopAfterFirst(NoProgress):
    """A progress that asks the run to stop (as Ctrl-C does) once the first image is back."""

    def __init__(self, stop: StopRequest) -> None:
        self.stop = stop

    def image_done(self, path: Path, status: str) -> None:
        self.stop.signum = self.stop.signum or signal.SIGINT


def test_a_stopped_cluster_run_says_so_lists_what_it_did_not_get_back_and_resumes(tmp_path, tiny_pkg, local_ray):
    _folder(tmp_path / "in")
    job = RestoreJob(
        tmp_path / "in",
        tmp_path / "out",
        tiny_pkg.root,
        SessionOptions(backend="onnxruntime"),
        report=tmp_path / "r.json",
    )
    stop = StopRequest()
    cut = restore_on_cluster(job, workers=1, progress=_StopAfterFirst(stop), stop=stop)
    report = json.loads((tmp_path / "r.json").read_text())
    assert cut.exit_code == 130 and report["interrupted"] and report["signal"] == "SIGINT"
    assert len(cut.restored) + len(cut.failed) == 1 and len(cut.not_processed) == 4  # 4 images + broken.png
    assert report["totals"]["not_processed"] == 4 and len(report["images"]) == 6  # notes.txt: skipped
    rest = restore_on_cluster(replace(job, report=None), workers=1)
    assert rest.exit_code == 1 and rest.interrupted is None  # broken.png fails, as in a whole run
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"img{i}.png" for i in range(4)]


def test_a_quiet_cluster_run_writes_rays_lines_to_a_log_file_not_the_terminal(tmp_path, tiny_pkg, local_ray, capfd):
    _folder(tmp_path / "in")
    args = ["-q", "restore", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(tiny_pkg.root)]
    args += ["--backend", "onnxruntime", "--cluster", "local", "--workers", "1", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output  # broken.png
    terminal = capfd.readouterr().err
    assert "Dataset" not in terminal and "Ray instance" not in terminal, terminal
    logs = sorted((cache_dir() / "logs").glob("ray-*.log"))
    assert logs and "Dataset" in logs[-1].read_text()


def test_each_clip_is_restored_whole_by_one_worker_as_a_local_run_does(tmp_path, tiny_pkg, local_ray):
    """Clips are checked on the driver and restored whole, one per task; clips on a pyarrow file
    system are refused before work."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE_CLIP, folder / "clip.mp4")
    shutil.copy(SAMPLES / "chelsea_haze.png", folder / "photo.png")
    options = SessionOptions(backend="onnxruntime", threads=1)
    local = restore(RestoreJob(folder, tmp_path / "local", tiny_pkg.root, options, video=VideoOptions(codec="ffv1")))
    job = RestoreJob(folder, tmp_path / "ray", tiny_pkg.root, options, video=VideoOptions(codec="ffv1"))
    summary = restore_on_cluster(job, workers=2)
    assert summary.exit_code == 0 and [r.status for r in summary.records] == ["ok", "ok"]
    (clip,) = [r for r in summary.records if r.frames]
    assert clip.shots == next(r.shots for r in local.records if r.frames)
    for name in ("clip.mp4", "photo.png"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    remote = RestoreJob(folder, tmp_path / "uri", tiny_pkg.root, options, filesystem=pafs.LocalFileSystem())
    with pytest.raises(InputError, match="clip.mp4: clips on a local file system cannot be restored yet"):
        restore_on_cluster(remote, workers=1)
    assert not (tmp_path / "uri").exists()
