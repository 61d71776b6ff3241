"""`moce bench` measures every case against the eager reference and reports consistent numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from moce.apps import bench
from moce.apps.bench import bench_device, bench_images
from moce.apps.bench_cases import REFERENCE, BenchOptions, expand_cases
from moce.apps.bench_results import from_json, saved_rows, to_json
from moce.apps.inspect import inspect_checkpoint
from moce.cli.main import app
from moce.errors import InputError
from tests.runtime.test_allocator import keeps_freed_memory_here


def test_cases_include_the_eager_reference_and_skip_unsupported_forms():
    cases = expand_cases(BenchOptions(["torch", "onnxruntime"], ["split", "conditional", "dense"], [64, 128], [1, 2]))
    assert sum(c.backend == REFERENCE for c in cases) == 4
    assert not any(c.backend == "torch" and c.routing == "dense" for c in cases)
    assert sum(c.backend == "torch" and c.routing == "conditional" for c in cases) == 4
    assert len(cases) == 4 * (1 + 2 + 3)


def test_each_shape_gets_the_same_image_whatever_else_is_benched():
    few = expand_cases(BenchOptions(["onnxruntime"], ["split"], [64], [1], device="cpu"))
    many = expand_cases(BenchOptions(["torch", "onnxruntime"], ["split", "dense"], [32, 64], [1, 2], device="cpu"))
    alone, among = bench_images(few, 3, seed=0), bench_images(many, 3, seed=0)
    square = ((64, 64), 1)
    assert set(among) == {((32, 32), 1), ((32, 32), 2), square, ((64, 64), 2)}
    np.testing.assert_array_equal(alone[square], among[square])
    assert not np.array_equal(alone[square], bench_images(few, 3, seed=1)[square])


def test_sizes_may_be_rectangles_and_each_case_runs_its_own_shape():
    cases = expand_cases(BenchOptions(["onnxruntime"], ["split"], [64, (32, 48)], [2], device="cpu"))
    assert [c.shape for c in cases] == [(64, 64), (64, 64), (32, 48), (32, 48)]
    assert cases[-1].label == "onnxruntime/split fp32 32x48px b2" and cases[0].width is None
    assert bench_images(cases, 3, seed=0)[((32, 48), 2)].shape == (2, 3, 32, 48)


def test_bench_cli_writes_json_and_chart(tmp_path, tiny_pkg):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # a caller's setting
    try:
        result = CliRunner().invoke(
            app,
            [
                "bench",
                "--model",
                str(tiny_pkg.root),
                "--backends",
                "onnxruntime",
                "--device",
                "cpu",
                "--sizes",
                "48x64",
                "--batch",
                "1,2",
                "--rounds",
                "2",
                "--warmup",
                "1",
                "--json",
                str(out),
                "--chart",
                str(png),
            ],
        )
        assert torch.backends.cuda.matmul.allow_tf32  # the float32 GEMM turned TF32 off only while it ran
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert result.exit_code == 0, result.output
    rows = saved_rows(json.loads(out.read_text()))
    assert len(rows) == 2 * 4 and png.stat().st_size > 1000
    # every expert's FLOPs as `moce inspect` counts them at the package's reference size (256 px, where
    # the count per pixel no longer depends on the size), for this image's pixels
    costs = inspect_checkpoint(tiny_pkg.root, 256, 256)["adapters"]
    dense_per_image = sum(e["flops"] for a in costs for e in a["experts"]) / 256**2 * 48 * 64 / 1e9
    for row in rows:
        assert (row["size"], row["width"]) == (48, 64)
        assert len(row["times_s"]) == 2 and row["median_ms"] > 0 and row["peak_mb"] > 10
        assert row["max_abs_vs_eager"] <= 1e-4  # every backend computes the same restoration
        assert row["expert_gflops"] <= row["dense_expert_gflops"]
        assert row["gflops"] == row["trunk_gflops"] + row["expert_gflops"] and row["trunk_gflops"] > 0
        assert abs(row["dense_expert_gflops"] - row["batch"] * dense_per_image) < 1e-9  # as `moce inspect` counts
        assert row["gemm_peak_gflops"] > 0 and row["share_of_gemm_peak"] > 0
        if row["routing"] == "dense":
            assert row["expert_gflops"] == row["dense_expert_gflops"]
        if row["backend"] == REFERENCE:
            assert row["speedup_vs_eager"] == 1.0
    assert "speed-up" in result.output and "float32 GEMM peak (cpu, median of one run per round)" in result.output
    kept = keeps_freed_memory_here()
    assert all(row["kept_freed_memory"] is kept for row in rows)
    assert ("memory allocator: freed blocks kept for reuse" in result.output) is kept
    assert len({row["gemm_peak_gflops"] for row in rows}) == 1  # one GEMM series per device
    one, two = (next(r for r in rows if r["backend"] == REFERENCE and r["batch"] == b) for b in (1, 2))
    assert abs(two["trunk_gflops"] - 2 * one["trunk_gflops"]) < 1e-9  # work scales with the batch
    assert to_json(from_json(rows)) == rows  # a saved run comes back whole
    replay = CliRunner().invoke(app, ["bench", "--from-json", str(out), "--chart", str(tmp_path / "again.png")])
    assert replay.exit_code == 0, replay.output
    assert result.output.rstrip().endswith(replay.output.rstrip())  # the whole table and its lines, measured once
    assert len(replay.output.splitlines()) >= len(rows) + 2
    assert (tmp_path / "again.png").stat().st_size > 1000


def test_runs_saved_by_0_7_read_back_and_older_ones_are_refused_in_one_line(tmp_path, tiny_pkg):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--model",
            str(tiny_pkg.root),
            "--backends",
            "onnxruntime",
            "--routing",
            "split",
            "--device",
            "cpu",
            "--sizes",
            "64",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--no-memory",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = saved_rows(json.loads(out.read_text()))
    (tmp_path / "0.7.json").write_text(json.dumps(rows))  # a bare list, as 0.7.5 and earlier wrote it
    replay = CliRunner().invoke(app, ["bench", "--from-json", str(tmp_path / "0.7.json")])
    assert replay.exit_code == 0 and "memory allocator:" in replay.output
    for row in rows:
        del row["kept_freed_memory"]  # the shape of a 0.2.0 file, read as glibc defaults until 0.8
    (tmp_path / "0.2.json").write_text(json.dumps(rows))
    old = CliRunner().invoke(app, ["bench", "--from-json", str(tmp_path / "0.2.json")])
    assert old.exit_code == 2 and "0.2.json: not a `moce bench --json` file (KeyError" in old.output


def _machine(monkeypatch, gpu: bool, ort_cuda: bool) -> None:
    """Pretend what this machine has (the device checks only ask these two functions)."""
    monkeypatch.setattr(bench, "cuda_available", lambda: gpu)
    monkeypatch.setattr(bench, "ort_providers", lambda: ["CUDAExecutionProvider"] * ort_cuda + ["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("gpu", "ort_cuda", "backends", "device", "expected"),
    [
        (False, False, ["torch", "onnxruntime"], None, "cpu"),
        (True, False, ["torch"], None, "cuda"),
        (True, True, ["torch", "onnxruntime"], None, "cuda"),
        (True, False, ["torch", "onnxruntime"], "cpu", "cpu"),
    ],
)
def test_every_case_runs_on_one_device(monkeypatch, gpu, ort_cuda, backends, device, expected):
    _machine(monkeypatch, gpu, ort_cuda)
    assert bench_device(BenchOptions(backends, ["split"], [64], [1], device=device)) == expected


@pytest.mark.parametrize(
    ("gpu", "backends", "device", "message"),
    [
        (True, ["torch", "onnxruntime"], None, "--device cuda: onnxruntime here has no CUDAExecutionProvider"),
        (False, ["torch"], "cuda", "--device cuda: PyTorch here sees no CUDA GPU"),
        (False, ["tensorrt"], None, "--device cpu: TensorRT runs on a CUDA GPU only"),
        (False, ["torch"], "tpu", "--device: 'tpu' is neither cpu nor cuda"),
    ],
)
def test_a_bench_that_would_compare_two_devices_is_refused(monkeypatch, gpu, backends, device, message):
    _machine(monkeypatch, gpu, ort_cuda=False)
    with pytest.raises(InputError, match=re.escape(message)):
        bench_device(BenchOptions(backends, ["split"], [64], [1], device=device))


def test_the_cli_refuses_onnxruntime_on_cuda_without_its_provider_in_one_line(monkeypatch, tiny_pkg):
    _machine(monkeypatch, gpu=True, ort_cuda=False)
    result = CliRunner().invoke(app, ["bench", "--model", str(tiny_pkg.root), "--sizes", "64", "--rounds", "1"])
    assert result.exit_code != 0 and "install onnxruntime-gpu in place of onnxruntime" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_bench_from_json_refuses_a_file_that_is_not_a_saved_run(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    result = CliRunner().invoke(app, ["bench", "--from-json", str(bad)])
    assert result.exit_code != 0 and "notes.json: not a `moce bench --json` file" in result.output


@pytest.mark.gpu
def test_bench_times_the_torch_backend_on_cuda(tmp_path, tiny_pkg):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--model",
            str(tiny_pkg.root),
            "--backends",
            "torch,torch-graphs",
            "--routing",
            "split,conditional",
            "--device",
            "cuda",
            "--sizes",
            "64",
            "--batch",
            "1,2",
            "--rounds",
            "3",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = saved_rows(json.loads(out.read_text()))
    assert rows and all(row["cuda"] and row["max_abs_vs_eager"] <= 1e-4 for row in rows)
    assert {(r["backend"], r["routing"]) for r in rows} >= {("torch-graphs", "conditional"), ("torch", "conditional")}
    assert "float32 GEMM peak (cuda" in result.output


def test_precisions_are_timed_side_by_side_with_their_accuracy_and_skips_say_why(tmp_path, tiny_variants):
    out = tmp_path / "b.json"
    args = ["bench", "-m", str(tiny_variants.manifest.root), "--backends", "onnxruntime,torch", "--routing", "split"]
    args += ["--precision", "fp32,bf16,int8", "--sizes", "32", "--rounds", "1", "--warmup", "0", "--no-memory"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = {(r["backend"], r["precision"]): r for r in saved_rows(json.loads(out.read_text()))}
    assert rows[("onnxruntime", "bf16")]["skipped"] == "the onnxruntime backend runs fp32, fp16, int8"
    assert rows[("torch", "int8")]["skipped"].startswith("the torch backend runs")
    assert "skipped onnxruntime/split bf16 32px b1: the onnxruntime backend runs" in result.output
    for key in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32"), ("torch", "bf16")):
        row = rows[key]
        assert row["skipped"] is None and row["median_ms"] > 0 and 0 <= row["route_agreement"] <= 1, key
    assert rows[("onnxruntime", "fp32")]["psnr_vs_eager"] > 80 and rows[("onnxruntime", "fp32")]["route_agreement"] == 1
    assert 20 < rows[("onnxruntime", "int8")]["psnr_vs_eager"] < rows[("onnxruntime", "fp32")]["psnr_vs_eager"]
    assert rows[("torch", "bf16")]["psnr_vs_eager"] > 30
    assert "fastest here at 32 px, batch 1: " in result.output and "PSNR dB / routes same" in result.output
    assert to_json(from_json(list(rows.values()))) == list(rows.values())


def test_bench_video_times_a_clip_against_the_same_frames_as_images_in_one_run(tmp_path, tiny_pkg):
    out = tmp_path / "video.json"
    args = ["bench", "--video", "-m", str(tiny_pkg.root), "--sizes", "64x96", "--frames", "3", "--threads", "1"]
    result = CliRunner().invoke(app, [*args, "--backends", "onnxruntime", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "video / image" in result.output and "96x64" in result.output
    saved = json.loads(out.read_text())
    (row,) = saved["video"]
    assert saved["written_by"] == "moce bench --video" and row["frames"] == 3
    assert row["video_over_image"] == pytest.approx(row["video_seconds"][0] / row["image_seconds"][0], rel=1e-2)
