"""The commands without a test of their own elsewhere: `moce train` and `moce build-engine`."""

from __future__ import annotations

import importlib.util
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.cli.main import app
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


def test_build_engine_refuses_a_bad_shape_in_one_line(tiny_pkg):
    result = CliRunner().invoke(app, ["build-engine", str(tiny_pkg.root), "--min-shape", "64x64"])
    assert result.exit_code == 2 and "BATCHxHEIGHTxWIDTH" in result.output


def test_every_command_takes_h_and_help_shows_the_defaults_written_in_it():
    for command in ("restore", "export", "compare", "bench", "evaluate", "demo", "triton", "serve", "train"):
        result = CliRunner().invoke(app, [command, "-h"])
        assert result.exit_code == 0 and f"{command} [OPTIONS]" in result.output, command
    words = " ".join(CliRunner().invoke(app, ["restore", "-h"]).output.split())  # as wrapped for any width
    assert "[default: bundled demo model]" in words


def test_output_is_spelled_the_same_everywhere_and_the_old_spelling_still_works(tmp_path, tiny_pkg):
    result = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "--out", str(tmp_path / "old")])
    assert result.exit_code == 0 and "--out is deprecated" in result.output
    result = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "-o", str(tmp_path / "new")])
    assert result.exit_code == 0 and "deprecated" not in result.output
    assert (tmp_path / "old" / "moce" / "config.pbtxt").is_file() and (
        tmp_path / "new" / "moce" / "config.pbtxt"
    ).is_file()


def test_max_pixels_takes_megapixels(tmp_path, tiny_pkg):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 40, 3), np.uint8))
    args = ["restore", str(tmp_path / "a.png"), str(tmp_path / "out"), "-m", str(tiny_pkg.root), "--max-pixels"]
    small = CliRunner().invoke(app, [*args, "1k"])
    assert small.exit_code == 1 and "1,600 pixels), over the limit of 1,000 pixels" in small.output
    assert CliRunner().invoke(app, [*args, "0.01M"]).exit_code == 0
    assert CliRunner().invoke(app, [*args, "lots"]).exit_code == 2
