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
