"""The commands without a test of their own elsewhere: `moce train` and `moce build-engine`."""

from __future__ import annotations

import importlib.util
import re
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.cli.build_engine_cmd import _profile
from moce.cli.main import app
from moce.cli.options import counts, image_sizes
from moce.engines.tensorrt_builder import Profile
from moce.model import load_model
from moce.package.manifest import load_manifest


def test_train_writes_a_loadable_checkpoint(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.png"), (rng.random((80, 96, 3)) * 255).astype(np.uint8))
    result = CliRunner().invoke(
        app,
        ["train", str(photos), "-o", str(tmp_path / "run"), "--dim", "8", "--iterations", "2", "--batch", "2",
         "--crop", "32", "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model, loaded = load_model(tmp_path / "run" / "final.ckpt")
    assert model.config.dim == 8 and loaded.sha256


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_engine_writes_the_onnx_variant_and_exits_3_without_tensorrt(tmp_path, tiny_pkg):
    root = tmp_path / "p.moce"
    shutil.copytree(tiny_pkg.root, root)
    result = CliRunner().invoke(app, ["build-engine", str(root), "--fp16"])
    assert result.exit_code == 3, result.output
    assert "TensorRT engines not built" in result.output
    assert "segment0" in load_manifest(root).graphs("fp16")


def test_build_engine_takes_sizes_and_batches_and_refuses_bad_ones_in_one_line(tiny_pkg):
    assert _profile(image_sizes("64,512x384,1024"), counts("1,2,4")) == Profile(
        (1, 64, 64), (2, 512, 384), (4, 1024, 1024)
    )
    for args, message in (
        (["--sizes", "64,512"], "--sizes and --batches take three values each"),
        (["--batches", "1,0,4"], "'--batches': '1,0,4': every count is at least 1"),
        (["--sizes", "64,big,1024"], "'64,big,1024': give sizes like 256 or 256x192"),
        (["--min-shape", "1x64x64"], "No such option: --min-shape"),  # the spelling of 0.6, gone in 0.8
    ):
        result = CliRunner().invoke(app, ["build-engine", str(tiny_pkg.root), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_quiet_keeps_the_result_and_verbose_times_every_step(tmp_path, tiny_pkg):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((24, 24, 3), 90, np.uint8))
    args = ["restore", str(tmp_path / "a.png"), "-m", str(tiny_pkg.root), "--threads", "1"]
    normal = CliRunner().invoke(app, [*args, str(tmp_path / "n")])
    quiet = CliRunner().invoke(app, ["-q", *args, str(tmp_path / "q")])
    verbose = CliRunner().invoke(app, ["-v", *args, str(tmp_path / "v")])
    assert normal.exit_code == quiet.exit_code == verbose.exit_code == 0
    assert "backend: onnxruntime" in normal.output and "backend:" not in quiet.output
    assert "images/s" in quiet.output and len(quiet.output.splitlines()) == 3  # the summary table alone
    stamped = [line for line in verbose.output.splitlines() if re.match(r"\[ *\d+\.\d\d s\] ", line)]
    assert any("backend: onnxruntime" in line for line in stamped) and any("a.png" in line for line in stamped)
    assert CliRunner().invoke(app, ["-q", "-v", "inspect", "x"]).exit_code == 2


def test_threads_mean_the_same_everywhere(tmp_path, tiny_pkg):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((24, 24, 3), 90, np.uint8))
    args = ["restore", str(tmp_path / "a.png"), str(tmp_path / "out"), "-m", str(tiny_pkg.root)]
    old = CliRunner().invoke(app, [*args, "--threads", "0"])  # "all cores" until 0.8: now leave it out
    assert old.exit_code == 2 and "leave --threads out for all cores" in old.output
    bad = CliRunner().invoke(app, [*args, "--threads", "-2"])
    assert bad.exit_code == 2 and "leave --threads out for all cores" in bad.output
    for command in ("restore", "bench", "train", "triton", "serve"):
        words = " ".join(CliRunner().invoke(app, [command, "-h"]).output.split())
        assert "--threads <int> CPU threads [default: all cores]" in words, command


def test_every_command_takes_h_and_help_shows_the_defaults_written_in_it():
    for command in ("restore", "export", "compare", "bench", "evaluate", "demo", "triton", "serve", "train"):
        result = CliRunner().invoke(app, [command, "-h"])
        assert result.exit_code == 0 and f"{command} [OPTIONS]" in result.output, command
    words = " ".join(CliRunner().invoke(app, ["restore", "-h"]).output.split())  # as wrapped for any width
    assert "[default: bundled demo model]" in words


def test_output_is_spelled_the_same_everywhere_and_the_old_spelling_is_one_line(tmp_path, tiny_pkg):
    for command in (["triton", str(tiny_pkg.root)], ["demo"], ["train", str(tmp_path)]):
        result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "old")])  # the spelling of 0.6
        assert result.exit_code == 2 and "No such option: --out" in result.output, command
        assert not (tmp_path / "old").exists()
    result = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "-o", str(tmp_path / "new")])
    assert result.exit_code == 0 and (tmp_path / "new" / "moce" / "config.pbtxt").is_file()


def test_max_pixels_takes_megapixels(tmp_path, tiny_pkg):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 40, 3), np.uint8))
    args = ["restore", str(tmp_path / "a.png"), str(tmp_path / "out"), "-m", str(tiny_pkg.root), "--max-pixels"]
    small = CliRunner().invoke(app, [*args, "1k"])
    assert small.exit_code == 1 and "1,600 pixels), over the limit of 1,000 pixels" in small.output
    assert CliRunner().invoke(app, [*args, "0.01M"]).exit_code == 0
    assert CliRunner().invoke(app, [*args, "lots"]).exit_code == 2


def test_train_keeps_what_is_not_its_run_and_refuses_a_run_of_another_architecture(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "p.png"), (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8))
    small = ["--iterations", "1", "--batch", "1", "--crop", "32", "--threads", "1", "--save-every", "1"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "final.ckpt").write_bytes(b"the user's own")
    result = CliRunner().invoke(app, ["train", str(photos), "-o", str(foreign), "--dim", "8", *small])
    assert result.exit_code == 2 and "holds files that moce did not write" in result.output
    assert (foreign / "final.ckpt").read_bytes() == b"the user's own"
    run = tmp_path / "run"
    assert CliRunner().invoke(app, ["train", str(photos), "-o", str(run), "--dim", "8", *small]).exit_code == 0
    other = CliRunner().invoke(app, ["train", str(photos), "-o", str(run), "--dim", "16", *small])
    assert other.exit_code == 2 and "this run has another architecture" in other.output
    assert len(other.output.strip().splitlines()) == 1
    (run / "last.ckpt").unlink()
    final = (run / "final.ckpt").read_bytes()
    again = CliRunner().invoke(app, ["train", str(photos), "-o", str(run), "--dim", "8", *small])
    assert again.exit_code == 2 and "holds a finished run (final.ckpt) and no last.ckpt" in again.output
    assert (run / "final.ckpt").read_bytes() == final
    big = CliRunner().invoke(app, ["train", str(photos), "-o", str(tmp_path / "r2"), "--crop", "64", *small[:-6]])
    assert big.exit_code == 2 and "no image has a shorter side of at least --crop 64" in big.output
