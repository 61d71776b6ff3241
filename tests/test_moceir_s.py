"""MoCE-IR-S (random weights): the full-size model exported once, then checked against PyTorch in
every routing form and in its fp16 and int8 variants. One file, so that a parallel run gives both
tests to one worker and the slowest export of the suite happens once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from moce.engines.build import BuildOptions, build, calibration_images
from moce.model import MoCEIR, derive_config
from moce.package.manifest import load_manifest
from moce.package.writer import export_package
from moce.runtime.validate import validate_package
from tests.conftest import manifest as golden_manifest
from tests.engines.test_variants import _evaluate, without_cpu_placement


@pytest.fixture(scope="module")
def s_export(tmp_path_factory):
    """MoCE-IR-S with random weights and its package with every form: the slowest export of the
    suite, made once for the tests that need a full-size model."""
    torch.manual_seed(0)
    model = MoCEIR(derive_config({k: tuple(v) for k, v in golden_manifest("S")["keys"].items()}))
    return model, export_package(model, tmp_path_factory.mktemp("s") / "s.moce").manifest


def split_only(package: Path, dest: Path) -> Path:
    """A copy of ``package`` holding the split plan's graphs alone: what `moce export --no-conditional
    --no-dense --no-tiles` writes (each graph is exported on its own, so the graphs are the same)."""
    shutil.copytree(package, dest)
    copy = load_manifest(dest)
    keep = set(copy.plan_graphs())
    for name in [n for n in copy.graph_entries if n not in keep]:
        (dest / copy.graph_entries.pop(name).file).unlink()
    copy.write()
    return dest


@pytest.mark.slow
def test_random_weight_moceir_s_agrees_with_pytorch(s_export):
    model, manifest = s_export
    sizes = ((64, 64), (128, 96))
    report = validate_package(manifest, model, sizes, (1, 3))
    assert {(c.mode, c.batch, c.height, c.width) for c in report.cases} >= {
        (m, b, h, w)
        for m in ("split", "dense", "conditional", "tiles-local", "tiles-imposed")
        for b in (1, 3)
        for h, w in sizes
    }
    assert not report.failures, report.failures
    assert report.max_error() <= 1e-5 and all(c.routes_equal for c in report.cases)


@pytest.mark.slow
def test_random_weight_moceir_s_fp16_and_int8(tmp_path, s_export):
    root = split_only(s_export[1].root, tmp_path / "s.moce")
    source = s_export[1]  # split_only removed graphs from its own copy alone
    assert all((source.root / e.file).is_file() for e in source.graph_entries.values())
    assert len(load_manifest(root).graph_entries) < len(source.graph_entries)
    build(root, BuildOptions(precisions=["fp16", "int8"], onnx_only=True))
    manifest = load_manifest(root)
    images = np.stack(calibration_images(None, side=96)[:6])
    psnr16, agree16 = _evaluate(manifest, "fp16", images)
    psnr8, agree8 = _evaluate(manifest, "int8", images)  # on the CPU: the int8-cpu placement
    psnr_trt, agree_trt = _evaluate(without_cpu_placement(manifest), "int8", images)
    assert psnr16 >= 45 and agree16 == 1.0
    # random weights: no trained ranges and near-tied routers; measured with onnxruntime 1.32's
    # quantiser on an AVX2 CPU: TensorRT's placement 33.5-34.6 dB, 85-87% of routes kept; the CPU's
    # (unsigned activations, 7-bit weights) 49.6 dB, every route kept
    assert psnr_trt >= 30 and agree_trt >= 0.8
    assert psnr8 >= 40 and agree8 >= 0.9
