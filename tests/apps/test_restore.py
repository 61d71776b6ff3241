"""`moce restore` end to end: backends agree, bad files are isolated, runs resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.apps.job import RestoreJob
from moce.apps.restore import restore
from moce.apps.session_options import SessionOptions
from moce.cli.main import app
from moce.errors import InputError, PackageError
from moce.imageio import read_image
from moce.package import store
from moce.package.manifest import load_manifest
from moce.progress import NoProgress
from moce.runtime.backends import make_runner
from moce.runtime.executor import PlanExecutor
from moce.runtime.restorer import RestoreOptions, Restorer
from tests.recording import record_calls

runner = CliRunner()

ORT = SessionOptions(backend="onnxruntime")


@pytest.fixture(scope="module")
def golden_pngs(tmp_path_factory, golden_io) -> Path:
    """The golden inputs as 16-bit PNGs (quantisation moves them by < 8e-6)."""
    folder = tmp_path_factory.mktemp("golden_png")
    for i, image in enumerate(golden_io["input"]):
        rgb16 = np.round(image.transpose(1, 2, 0) * 65535).astype(np.uint16)
        cv2.imwrite(str(folder / f"sample{i}.png"), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    return folder


@pytest.mark.parametrize(
    ("backend", "routing"),
    [
        ("onnxruntime", "split"),
        ("onnxruntime", "conditional"),
        ("onnxruntime", "dense"),
        ("torch", "split"),
        ("torch", "conditional"),
    ],
)
def test_backends_give_the_same_pixels_and_the_golden_routes(tiny_pkg, golden_pngs, golden_io, backend, routing):
    images = [read_image(golden_pngs / f"sample{i}.png")[0] for i in range(4)]
    with make_runner(backend, tiny_pkg).runner as r:
        results = Restorer(PlanExecutor(tiny_pkg, r), RestoreOptions(routing=routing, batch=4)).restore_batch(images)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.restored.transpose(2, 0, 1), golden_io["output"][i], atol=1e-4, rtol=0)
        assert [route[0] for route in result.routes] == golden_io["routes"][i].tolist()


@pytest.mark.parametrize("routing", ["split", "conditional", "dense"])
def test_report_routes_equal_the_golden_routes(tmp_path, tiny_pkg, golden_pngs, golden_io, routing):
    report = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "restore",
            str(golden_pngs),
            str(tmp_path / "out"),
            "--model",
            str(tiny_pkg.root),
            "--backend",
            "onnxruntime",
            "--routing",
            routing,
            "--batch",
            "2",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["backend"] == "onnxruntime" and data["routing"] == routing and data["precision"] == "fp32"
    assert [img["routes"] for img in data["images"]] == golden_io["routes"].tolist()
    for img in data["images"]:
        assert img["status"] == "ok" and img["error"] is None and img["seconds"] > 0
        assert len(img["gates"]) == 3 and all(0 < g[0] <= 1 for g in img["gates"])
        assert all(m >= 0.3 for m in img["margins"])  # golden data: smallest margin 0.34
    skipped = data["totals"]["expert_compute_skipped"]
    assert (skipped == 0.0) if routing == "dense" else (0.3 < skipped < 1.0)


def test_each_chosen_expert_graph_runs_once_per_batch(tiny_pkg, golden_pngs, golden_io):
    images = [read_image(golden_pngs / f"sample{i}.png")[0] for i in range(4)]
    with make_runner("onnxruntime", tiny_pkg).runner as r:
        calls = record_calls(r)
        Restorer(PlanExecutor(tiny_pkg, r), RestoreOptions(batch=4)).restore_batch(images)
        experts_run = [(g, b) for g, b in calls if g.startswith("adapter")]
    routes = golden_io["routes"]
    expected = [
        (f"adapter{a}.expert{e}", int((routes[:, a] == e).sum())) for a in range(3) for e in np.unique(routes[:, a])
    ]
    assert sorted(experts_run) == sorted(expected)


def _messy_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    root.mkdir()
    good = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(root / "good.png"), good)
    data = (root / "good.png").read_bytes()
    (root / "corrupt.png").write_bytes(data[: len(data) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "text.jpg").write_text("not a jpeg")
    cv2.imwrite(str(root / "deep16.png"), (rng.random((48, 40, 3)) * 65535).astype(np.uint16))
    cv2.imwrite(str(root / "gray.jpg"), (rng.random((40, 40)) * 255).astype(np.uint8))
    cv2.imwrite(str(root / "rgba.png"), (rng.random((32, 48, 4)) * 255).astype(np.uint8))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(data)
    (root / "line\nbreak.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    os.mkfifo(root / "pipe.png")
    (root / "folder.png").mkdir()  # a sub-folder: listed as not entered (no -r)


def test_messy_folder_restores_the_good_files_and_lists_the_bad(tmp_path, tiny_pkg):
    _messy_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "restore",
            str(tmp_path / "in"),
            str(out),
            "--model",
            str(tiny_pkg.root),
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 1
    for bad in ("corrupt.png", "zero.png", "text.jpg", "line\\nbreak.png"):
        assert f"{tmp_path / 'in' / bad}" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["deep16.png", "good.png", "gray.jpg", "rgba.png"]
    src = {p.name: cv2.imread(str(tmp_path / "in" / p.name), cv2.IMREAD_UNCHANGED) for p in out.iterdir()}
    for name, original in src.items():
        restored = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert restored.shape == original.shape and restored.dtype == original.dtype, name
    np.testing.assert_array_equal(
        cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3], src["rgba.png"][..., 3]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert {i["input"].rsplit("/", 1)[1]: (i["status"], i["reason"]) for i in report["images"]} == {
        "corrupt.png": ("error", None),
        "zero.png": ("error", None),
        "text.jpg": ("error", None),
        "line\nbreak.png": ("error", None),
        "good.png": ("ok", None),
        "deep16.png": ("ok", None),
        "gray.jpg": ("ok", None),
        "rgba.png": ("ok", None),
        "notes.txt": ("skipped", "not an image or video type moce reads (.txt)"),
        ".hidden.png": ("skipped", "hidden file"),
        "pipe.png": ("skipped", "not a regular file"),
        "folder.png": ("skipped", "sub-folder not entered (-r/--recursive restores sub-folders)"),
    }
    assert all("\n" not in i["error"] for i in report["images"] if i["error"])
    timings = {"seconds": 0, "setup_seconds": 0, "restore_seconds": 0, "images_per_second": 0}
    assert report["totals"] | timings | {"expert_compute_skipped": 0} == {
        "files": 12,
        "images": 8,
        "ok": 4,
        "errors": 4,
        "skipped": 4,
        "skipped_existing": 0,
        "not_processed": 0,
        "frames": 0,
        "seconds": 0,
        "setup_seconds": 0,
        "restore_seconds": 0,
        "images_per_second": 0,
        "expert_compute_skipped": 0,
    }


class _StopAfter(NoProgress):
    def __init__(self, count: int) -> None:
        self.count = count

    def image_done(self, path: Path, status: str) -> None:
        self.count -= 1
        if self.count == 0:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_without_redoing_finished_images(tmp_path, tiny_pkg):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        cv2.imwrite(str(src / f"img{i}.png"), (rng.random((32, 40, 3)) * 255).astype(np.uint8))
    job = RestoreJob(src, tmp_path / "out", model=tiny_pkg.root, session=ORT, report=tmp_path / "r.json")
    with pytest.raises(KeyboardInterrupt):
        restore(job, _StopAfter(2))
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert sorted(done) == ["img0.png", "img1.png"]  # complete files only, no temporaries
    assert json.loads((tmp_path / "r.json").read_text())["totals"]["ok"] == 2
    summary = restore(job)
    assert sorted(Path(r.input).name for r in summary.skipped) == ["img0.png", "img1.png"]
    assert sorted(Path(r.input).name for r in summary.restored) == ["img2.png", "img3.png", "img4.png"]
    assert all((tmp_path / "out" / n).stat().st_mtime_ns == t for n, t in done.items())


def test_bad_paths_and_packages_fail_before_any_work(tmp_path, tiny_pkg):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="no such file"):
        restore(RestoreJob(tmp_path / "missing", tmp_path / "out", model=tiny_pkg.root))
    with pytest.raises(InputError, match="inside the input tree"):
        restore(RestoreJob(src, src / "restored", model=tiny_pkg.root))
    broken = tmp_path / "broken.moce"
    shutil.copytree(tiny_pkg.root, broken)
    (broken / "split" / "adapter0_expert2.onnx").write_bytes(b"x")
    with pytest.raises(PackageError, match="adapter0_expert2.onnx"):
        restore(RestoreJob(src, tmp_path / "out", model=broken))
    assert not (tmp_path / "out").exists() and not (src / "restored").exists()
    result = runner.invoke(app, ["restore", str(src), str(src / "x"), "--model", str(tiny_pkg.root)])
    assert result.exit_code == 2 and "inside the input tree" in result.output


def test_checkpoint_as_model_is_exported_into_the_cache(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.setenv("MOCE_CACHE", str(tmp_path / "cache"))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((24, 24, 3), 128, np.uint8))
    summary = restore(RestoreJob(tmp_path / "a.png", tmp_path / "out", model=tiny_ckpt))
    assert summary.exit_code == 0 and (tmp_path / "out" / "a.png").is_file()
    assert list((tmp_path / "cache" / "packages").glob("*.moce")) == [store.cached_package_path(tiny_ckpt)]
    assert load_manifest(store.cached_package_path(tiny_ckpt)).validation.passed  # as moce export does
    restore(RestoreJob(tmp_path / "a.png", tmp_path / "out1", model=tiny_ckpt))
    assert len(list((tmp_path / "cache" / "packages").glob("*.moce"))) == 1  # the same code reuses the export


def test_single_file_to_named_output_with_other_format(tmp_path, tiny_pkg):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((24, 24, 3), 128, np.uint8))
    summary = restore(RestoreJob(tmp_path / "a.png", tmp_path / "b.jpg", model=tiny_pkg.root))
    assert summary.exit_code == 0 and cv2.imread(str(tmp_path / "b.jpg")).shape == (24, 24, 3)
    summary = restore(RestoreJob(tmp_path / "a.png", tmp_path / "dir", model=tiny_pkg.root, ext="webp"))
    assert (tmp_path / "dir" / "a.webp").is_file()


def test_tiled_restore_through_the_cli(tmp_path, tiny_pkg):
    cv2.imwrite(str(tmp_path / "big.png"), (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8))
    report = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "restore",
            str(tmp_path / "big.png"),
            str(tmp_path / "out"),
            "--model",
            str(tiny_pkg.root),
            "--tile",
            "128",
            "--overlap",
            "16",
            "--batch",
            "3",
            "--route-per",
            "tile",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    image = data["images"][0]
    assert image["tiles"] == 6 and image["gates"] is None and len(image["routes"]) == 3
    # tiles that route themselves share no sums: one pass, whatever --tile-passes says
    assert data["tiling"] == {"tile": 128, "overlap": 16, "route_per": "tile", "passes": 1}


def _two_images(src: Path) -> None:
    src.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(src / name), np.full((24, 24, 3), 100, np.uint8))


def test_an_output_path_taken_by_a_folder_is_an_error_not_a_skip(tmp_path, tiny_pkg):
    _two_images(tmp_path / "in")
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    summary = restore(RestoreJob(tmp_path / "in", tmp_path / "out", model=tiny_pkg.root, session=ORT))
    assert summary.exit_code == 1
    assert {Path(r.input).name: r.status for r in summary.records} == {"a.png": "error", "b.png": "ok"}
    assert "taken by a non-file" in summary.failed[0].error


def test_inputs_that_are_not_files_or_folders_are_refused(tmp_path, tiny_pkg):
    os.mkfifo(tmp_path / "pipe.png")
    for source in (Path("/dev/null"), tmp_path / "pipe.png"):
        with pytest.raises(InputError, match="not a regular file or a folder"):
            restore(RestoreJob(source, tmp_path / "out", model=tiny_pkg.root))


@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_a_report_that_cannot_be_written_is_refused_before_work(tmp_path, tiny_pkg, where):
    _two_images(tmp_path / "in")
    (tmp_path / "taken").mkdir()
    (tmp_path / "file").write_text("x")
    report = tmp_path / "taken" if where == "folder" else tmp_path / "file" / "r.json"
    job = RestoreJob(tmp_path / "in", tmp_path / "out", model=tiny_pkg.root, report=report)
    with pytest.raises(InputError, match="--report"):
        restore(job)
    assert not (tmp_path / "out").exists()


def test_a_report_write_failure_is_one_line_exit_2_and_leaves_no_temporary(tmp_path, tiny_pkg, monkeypatch):
    _two_images(tmp_path / "in")

    def full_disk(path, data):  # noqa: ANN001 - the signature of files.write_bytes_atomic
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("moce.apps.report.write_bytes_atomic", full_disk)
    result = runner.invoke(
        app,
        [
            "restore",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "-m",
            str(tiny_pkg.root),
            "--report",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 2 and "cannot write the report (No space left on device)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_whole_network_routing_refuses_images_that_need_tiles_before_work(tmp_path, tiny_pkg):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "big.png"), np.zeros((40, 80, 3), np.uint8))
    job = RestoreJob(
        src, tmp_path / "out", model=tiny_pkg.root, session=SessionOptions(routing="dense", tile=64, overlap=8)
    )
    with pytest.raises(InputError, match=r"big.png: 80x40 needs tiles \(--tile 64\).*--routing split"):
        restore(job)
    assert not (tmp_path / "out").exists()


def test_temporaries_left_by_a_killed_run_are_removed_at_start(tmp_path, tiny_pkg):
    _two_images(tmp_path / "in")
    (tmp_path / "out").mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / "out" / f".a.png.moce{dead.pid}.k3j4h5g6.part"
    stale.write_bytes(b"half an image")
    summary = restore(RestoreJob(tmp_path / "in", tmp_path / "out", model=tiny_pkg.root, session=ORT))
    assert summary.exit_code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_kill_9_at_any_moment_then_the_same_command_gives_the_uninterrupted_outputs(tmp_path, tiny_pkg):
    """SIGKILL the real command while it writes, several times, then run it to the end: the outputs
    are bit-identical to one uninterrupted run and no temporary is left."""
    import signal
    import sys
    import time

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(12):
        cv2.imwrite(str(src / f"img{i:02d}.png"), (rng.random((48, 56, 3)) * 255).astype(np.uint8))
    moce = str(Path(sys.executable).with_name("moce"))

    def command(out: Path) -> list[str]:
        return [moce, "restore", str(src), str(out), "-m", str(tiny_pkg.root), "--backend", "onnxruntime"]

    subprocess.run(command(tmp_path / "ref"), check=True, capture_output=True)
    out = tmp_path / "out"
    for after in (1, 5, 9):  # outputs finished before the kill
        proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and sum(p.suffix == ".png" for p in out.iterdir()) >= after:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(command(out), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())
    for path in (tmp_path / "ref").iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.fixture()
def full_disk(tmp_path):
    """A 96 KiB tmpfs (root with mount rights only; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:80]}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_filesystem_fails_images_one_by_one_and_leaves_no_partial_file(tmp_path, tiny_pkg, full_disk):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(4)
    for i in range(8):  # about 30 KB each as PNG: the disk takes two or three
        cv2.imwrite(str(src / f"n{i}.png"), (rng.random((96, 104, 3)) * 255).astype(np.uint8))
    summary = restore(RestoreJob(src, full_disk / "out", model=tiny_pkg.root, session=ORT, report=tmp_path / "r.json"))
    assert summary.exit_code == 1 and summary.restored and summary.failed
    assert all("No space left on device" in r.error for r in summary.failed)
    written = sorted(p.name for p in (full_disk / "out").iterdir())
    assert written == sorted(Path(r.output).name for r in summary.restored)  # complete files only
    for name in written:
        assert cv2.imread(str(full_disk / "out" / name)) is not None
    args = [
        "restore",
        str(src),
        str(tmp_path / "out2"),
        "-m",
        str(tiny_pkg.root),
        "--report",
        str(full_disk / "r.json"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "cannot write the report" in result.output
    assert not any(p.name.endswith(".part") for p in full_disk.rglob("*"))


@pytest.mark.parametrize(
    ("backend", "precision", "routing", "message"),
    [
        ("torch", "fp32", "dense", "the torch backend runs split or conditional routing"),
        ("tensorrt", "fp32", "conditional", "the tensorrt backend runs split routing"),
        ("onnxruntime", "fp16", "conditional", "has no fp16 conditional graph"),
    ],
)
def test_a_routing_form_the_package_or_backend_lacks_is_refused_before_work(
    tmp_path, tiny_variants, backend, precision, routing, message
):
    _two_images(tmp_path / "in")
    options = SessionOptions(backend=backend, precision=precision, routing=routing)
    job = RestoreJob(tmp_path / "in", tmp_path / "out", tiny_variants.manifest.root, options)
    with pytest.raises(InputError, match=message):
        restore(job)
    assert not (tmp_path / "out").exists()


def test_the_torch_backend_restores_in_bf16(tmp_path, tiny_pkg):
    _two_images(tmp_path / "in")
    args = ["restore", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(tiny_pkg.root), "--backend", "torch"]
    result = runner.invoke(app, [*args, "--precision", "bf16", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["precision"] == "bf16" and report["totals"]["ok"] == 2
