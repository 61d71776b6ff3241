"""Real TensorRT and CUDA paths. Skipped without a GPU / TensorRT; written to run as-is with
`pip install 'moce[trt]'` on an NVIDIA machine. The torch CUDA test passed on an H200;
the TensorRT ones have not run (no TensorRT on any machine lent so far)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from moce.engines.build import BuildOptions, build
from moce.engines.tensorrt_builder import Profile
from moce.package.manifest import load_manifest
from moce.runtime.backends import make_runner
from moce.runtime.executor import PlanExecutor


@pytest.mark.gpu
def test_torch_cuda_backend_matches_the_golden_outputs(tiny_pkg, golden_io):
    with make_runner("torch", tiny_pkg, device="cuda").runner as runner:
        result = PlanExecutor(tiny_pkg, runner).run(golden_io["input"])
    np.testing.assert_allclose(result.restored, golden_io["output"], atol=1e-4, rtol=0)
    assert np.stack([r.experts[:, 0] for r in result.routings], 1).tolist() == golden_io["routes"].tolist()


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.parametrize(
    ("precision", "atol", "min_agreement"), [("fp32", 1e-3, 1.0), ("fp16", 2e-2, 1.0), ("int8", 1e-1, 0.9)]
)
def test_tensorrt_engines_restore_like_onnxruntime(tmp_path, tiny_pkg, golden_io, precision, atol, min_agreement):
    root = tmp_path / "p.moce"
    shutil.copytree(tiny_pkg.root, root)
    options = BuildOptions(
        precisions=[] if precision == "fp32" else [precision],
        profile=Profile((1, 64, 64), (4, 64, 96), (4, 128, 128)),
        workspace_mb=1024,
        engine_cache=tmp_path / "cache",
    )
    result = build(root, options)
    assert result.tensorrt_error is None and result.engines
    manifest = load_manifest(root)
    with make_runner("onnxruntime", manifest, precision=precision).runner as runner:
        ref = PlanExecutor(manifest, runner).run(golden_io["input"])
    with make_runner("tensorrt", manifest, precision=precision).runner as runner:
        got = PlanExecutor(manifest, runner).run(golden_io["input"])
    assert np.abs(got.restored - ref.restored).max() <= atol
    agree = np.mean(np.stack([r.experts for r in got.routings]) == np.stack([r.experts for r in ref.routings]))
    assert agree >= min_agreement
