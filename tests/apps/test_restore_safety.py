"""`moce restore` refuses, before any image runs, what would lose a file or a result."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.cli.main import app


@pytest.fixture()
def run(tiny_pkg, monkeypatch):
    """`moce restore ARGS -m tiny` through the CLI, recording whether the backend ever ran."""
    ran = []
    from moce.runtime import restorer

    real = restorer.Restorer.restore_batch
    monkeypatch.setattr(restorer.Restorer, "restore_batch", lambda self, *a: ran.append(1) or real(self, *a))

    def invoke(*args: str | Path):
        result = CliRunner().invoke(app, ["restore", *map(str, args), "-m", str(tiny_pkg.root), "--threads", "1"])
        return result, bool(ran)

    return invoke


def _image(path: Path, dtype=np.uint8, channels: int = 3) -> None:
    peak = 255 if dtype == np.uint8 else 65535
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), (np.random.default_rng(0).random((24, 32, channels)) * peak).astype(dtype))


def test_two_inputs_that_would_share_an_output_are_refused_before_work(tmp_path, run):
    _image(tmp_path / "in" / "photo.png")
    _image(tmp_path / "in" / "photo.tif")
    result, ran = run(tmp_path / "in", tmp_path / "out", "--ext", "jpg")
    assert result.exit_code == 2 and not ran
    inp = tmp_path / "in"
    assert f"photo.jpg: {inp / 'photo.png'} and {inp / 'photo.tif'} would both be restored into it" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_several_inputs_land_under_their_own_names_as_cp_puts_them(tmp_path, run):
    for name in ("a.png", "sub/b.png", "shots/c.png", "shots/deep/d.png", "other/a.png"):
        _image(tmp_path / name)
    result, ran = run(tmp_path / "a.png", tmp_path / "sub" / "b.png", tmp_path / "shots", tmp_path / "out", "-r")
    assert result.exit_code == 0 and ran, result.output
    made = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert made == ["a.png", "b.png", "shots/c.png", "shots/deep/d.png"]
    # the same again (a resumed run) skips them; the same file twice is one input
    result, _ = run(tmp_path / "a.png", tmp_path / "a.png", tmp_path / "out")
    assert result.exit_code == 0 and "skipped 1 image(s) whose output exists" in result.output


@pytest.mark.parametrize(
    "names, output, message",
    [
        (("a.png", "other/a.png"), "out", "would both be restored into it"),
        (("a.png", "sub/b.png"), "out.png", "2 inputs are restored into a folder; name a folder"),
        (("a.png",), None, "restore takes the inputs, then the output"),
    ],
)
def test_several_inputs_that_cannot_land_side_by_side_are_refused_before_work(tmp_path, run, names, output, message):
    for name in ("a.png", "sub/b.png", "other/a.png"):
        _image(tmp_path / name)
    args = [tmp_path / n for n in names] + ([tmp_path / output] if output else [])
    result, ran = run(*args)
    assert result.exit_code == 2 and message in result.output and not ran, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.png").exists()


def test_an_output_that_is_its_own_input_or_a_file_for_a_folder_is_refused(tmp_path, run):
    _image(tmp_path / "in" / "a.png")
    result, ran = run(tmp_path / "in" / "a.png", tmp_path / "in" / "a.png")
    assert result.exit_code == 2 and "would be restored into itself" in result.output and not ran
    result, ran = run(tmp_path / "in" / "a.png", tmp_path / "in")
    assert result.exit_code == 2 and "would be restored into itself" in result.output and not ran
    _image(tmp_path / "existing.png")
    before = (tmp_path / "existing.png").read_bytes()
    result, ran = run(tmp_path / "in", tmp_path / "existing.png")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output and not ran
    assert (tmp_path / "existing.png").read_bytes() == before


@pytest.mark.parametrize(
    ("name", "dtype", "channels", "ext", "loss"),
    [
        ("deep.png", np.uint16, 3, "jpg", "16-bit samples would become 8-bit"),
        ("deep.tif", np.uint16, 3, "webp", "16-bit samples would become 8-bit"),
        ("alpha.png", np.uint8, 4, "jpg", "alpha channel would be dropped"),
    ],
)
def test_a_lossy_ext_is_refused_unless_allowed(tmp_path, run, name, dtype, channels, ext, loss):
    _image(tmp_path / "in" / name, dtype, channels)
    result, ran = run(tmp_path / "in", tmp_path / "out", "--ext", ext)
    assert result.exit_code == 2 and loss in result.output and "--allow-lossy" in result.output and not ran
    result, ran = run(tmp_path / "in", tmp_path / "out", "--ext", ext, "--allow-lossy")
    assert result.exit_code == 0 and ran, result.output
    assert (tmp_path / "out" / Path(name).with_suffix(f".{ext}")).is_file()


def test_a_lossless_ext_runs(tmp_path, run):
    _image(tmp_path / "in" / "deep.tif", np.uint16)
    result, ran = run(tmp_path / "in", tmp_path / "out", "--ext", "png")
    assert result.exit_code == 0 and ran, result.output
    assert cv2.imread(str(tmp_path / "out" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_a_report_that_cannot_be_written_is_refused_before_work(tmp_path, run):
    _image(tmp_path / "in" / "a.png")
    result, ran = run(tmp_path / "in", tmp_path / "out", "--report", "/proc/nope.json")
    assert result.exit_code == 2 and "--report cannot be written" in result.output and not ran


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "gpu"], "'--device': 'gpu': give cpu, cuda or cuda:N"),
        (["--cluster", "ray"], "--cluster ray: not a Ray address; use local"),
        (["--cluster", "nonsense"], "--cluster nonsense: not a Ray address"),
        (["--tile", "0"], "'--tile': 0: a tile side is a multiple of 8 from 16 up"),
        (["--route-per", "pixel"], "unknown --route-per 'pixel'; choose from image, tile"),
    ],
)
def test_bad_option_values_are_one_line_errors_before_work(tmp_path, run, args, message):
    _image(tmp_path / "in" / "a.png")
    result, ran = run(tmp_path / "in", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output and not ran, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="this machine has a GPU")
def test_cuda_asked_for_on_a_machine_without_it_is_refused(tmp_path, run):
    _image(tmp_path / "in" / "a.png")
    for backend in ("auto", "torch", "onnxruntime"):
        result, ran = run(tmp_path / "in", tmp_path / "out", "--device", "cuda", "--backend", backend)
        assert result.exit_code == 2 and "shows no NVIDIA GPU; use --device cpu" in result.output and not ran


def test_an_unreadable_folder_in_the_input_is_an_error_in_the_report(tmp_path, run, monkeypatch):
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "in" / "locked" / "b.png")
    real = os.walk

    def walk(top, onerror=None, **kwargs):  # as root, chmod 000 does not stop reading: say it failed
        for folder, dirs, names in real(top, onerror=onerror, **kwargs):
            if "locked" in dirs:
                dirs.remove("locked")
                onerror(PermissionError(13, "Permission denied", str(Path(folder) / "locked")))
            yield folder, dirs, names

    monkeypatch.setattr("moce.apps.discovery.os.walk", walk)
    result, _ = run(tmp_path / "in", tmp_path / "out", "-r", "--report", tmp_path / "r.json")
    assert result.exit_code == 1, result.output
    records = {Path(r["input"]).name: r for r in json.loads((tmp_path / "r.json").read_text())["images"]}
    assert records["a.png"]["status"] == "ok" and records["locked"]["status"] == "error"
    assert "folder cannot be read" in records["locked"]["error"] and "Permission denied" in records["locked"]["error"]


def test_a_package_file_that_cannot_be_read_or_a_swapped_graph_is_refused_before_work(tmp_path, tiny_pkg, monkeypatch):
    from moce.package.manifest import load_manifest, sha256_bytes

    _image(tmp_path / "in" / "a.png")
    package = tmp_path / "p.moce"
    shutil.copytree(tiny_pkg.root, package)
    manifest = load_manifest(package)
    (package / manifest.graph_entries["segment0"].file).write_bytes((package / "split" / "segment1.onnx").read_bytes())
    manifest.graph_entries["segment0"].sha256 = sha256_bytes((package / "split" / "segment1.onnx").read_bytes())
    manifest.write()  # a valid graph, re-hashed, in the wrong place
    args = ["restore", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(package)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "segment0.onnx: takes" in result.output and "re-export" in result.output
    real = Path.read_bytes
    monkeypatch.setattr(
        Path, "read_bytes", lambda self: _denied(self) if self.name == "weights.safetensors" else real(self)
    )
    result = CliRunner().invoke(app, ["restore", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(tiny_pkg.root)])
    assert result.exit_code == 2 and "weights.safetensors: cannot be read (Permission denied)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _denied(path: Path) -> bytes:
    raise PermissionError(13, "Permission denied", str(path))


def test_checking_the_report_folder_leaves_only_the_report_there(tmp_path, run):
    _image(tmp_path / "in" / "a.png")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "mine.txt").write_text("the user's")
    result, _ = run(tmp_path / "in", tmp_path / "out", "--report", tmp_path / "reports" / "r.json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["mine.txt", "r.json"]
    assert (tmp_path / "reports" / "mine.txt").read_text() == "the user's"


def test_overwrite_never_replaces_an_input_and_the_run_is_refused_before_any_image(tmp_path, run):
    _image(tmp_path / "a" / "p.png")
    _image(tmp_path / "o" / "a" / "p.png", channels=1)  # also an input, named on its own
    before = (tmp_path / "o" / "a" / "p.png").read_bytes()
    result, ran = run(tmp_path / "a", tmp_path / "o" / "a" / "p.png", tmp_path / "o", "--overwrite")
    assert result.exit_code == 2 and not ran, result.output
    assert "is also an input of this run" in result.output
    assert (tmp_path / "o" / "a" / "p.png").read_bytes() == before


def test_a_report_never_lands_on_an_input_an_output_or_a_foreign_file(tmp_path, run):
    _image(tmp_path / "in" / "a.png")
    _image(tmp_path / "out" / "b.png")
    (tmp_path / "notes.json").write_text("{}")
    for report, why in (
        (tmp_path / "in" / "a.png", "which this command reads"),
        (tmp_path / "out" / "a.png", "--report is also the output of"),
        (tmp_path / "out" / "b.png", "was not written by moce"),
        (tmp_path / "notes.json", "was not written by moce"),
    ):
        result, ran = run(tmp_path / "in", tmp_path / "out", "--report", report)
        assert result.exit_code == 2 and not ran and why in result.output, result.output
    assert (tmp_path / "notes.json").read_text() == "{}" and not (tmp_path / "out" / "a.png").exists()
    result, _ = run(tmp_path / "in", tmp_path / "out", "--report", tmp_path / "r.json")
    assert result.exit_code == 0 and json.loads((tmp_path / "r.json").read_text())["written_by"] == "moce restore"
    result, _ = run(tmp_path / "in", tmp_path / "out", "--report", tmp_path / "r.json")  # its own: replaced
    assert result.exit_code == 0, result.output


def test_a_folder_with_nothing_to_restore_says_why_in_one_line(tmp_path, run):
    (tmp_path / "empty").mkdir()
    _image(tmp_path / "top" / "inner" / "a.png")
    (tmp_path / "top" / "notes.txt").write_text("x")
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / ".a.png").write_bytes(b"x")
    for source, why in (
        ("empty", "no images (an empty folder)"),
        ("top", "no images here; 1 sub-folder(s) not entered (inner, ...): add -r"),
        ("hidden", "no images (1 file(s) passed over; .a.png: hidden file)"),
    ):
        result, ran = run(tmp_path / source, tmp_path / "out")
        assert result.exit_code == 2 and not ran and why in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    _image(tmp_path / "top" / "b.png")
    result, _ = run(tmp_path / "top", tmp_path / "out")
    assert (
        result.exit_code == 0 and "1 sub-folder(s) not entered (inner); -r/--recursive restores them" in result.output
    )
    result, _ = run(tmp_path / "top", tmp_path / "out2", "-r")
    assert result.exit_code == 0 and "not entered" not in result.output
