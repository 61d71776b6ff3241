"""`moce compare`: thresholds decide the exit code; the README's plain Polygraphy commands work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from polygraphy.comparator import RunResults
from typer.testing import CliRunner

from moce.cli.main import app
from moce.package.manifest import load_manifest
from moce.package.store import cached_package_path


def test_compare_passes_and_fails_on_thresholds(tiny_variants, tmp_path):
    root = str(tiny_variants.manifest.root)
    runner = CliRunner()
    # INT8 kernels differ between CPUs (AVX2, AVX-512 VNNI): one of the 30 routing decisions has
    # been seen to flip (96.7%, 46 dB), so INT8 is held to 90% here and fp16 to every route.
    ok = runner.invoke(
        app,
        [
            "compare",
            root,
            "--runners",
            "torch,onnxruntime:fp16,onnxruntime:int8",
            "--min-route-agreement",
            "0.9",
            "--atol",
            "0.1",
            "--rtol",
            "0.1",
            "--save-results",
            str(tmp_path / "rr.json"),
            "--json",
            str(tmp_path / "c.json"),
        ],
    )
    assert ok.exit_code == 0, ok.output
    table = json.loads((tmp_path / "c.json").read_text())
    assert [r["runner"] for r in table["rows"]] == ["onnxruntime:fp16", "onnxruntime:int8"]
    fp16, int8 = table["rows"]
    assert fp16["route_agreement"] == 1.0 and int8["route_agreement"] >= 0.9
    assert fp16["min_psnr"] > 45 and int8["min_psnr"] > 35
    assert (tmp_path / "rr.json").stat().st_size > 0  # Polygraphy RunResults, signed beside its own keys
    assert len(RunResults.load(str(tmp_path / "rr.json"))) == 3
    assert json.loads((tmp_path / "rr.json").read_text())["written_by"] == "moce compare"
    strict_psnr = runner.invoke(app, ["compare", root, "--runners", "onnxruntime,onnxruntime:int8", "--min-psnr", "80"])
    assert strict_psnr.exit_code == 1 and "PSNR" in strict_psnr.output
    strict_tol = runner.invoke(
        app,
        [
            "compare",
            root,
            "--runners",
            "onnxruntime,onnxruntime:int8",
            "--atol",
            "1e-6",
            "--rtol",
            "1e-6",
            "--error-stat",
            "max",
        ],
    )
    assert strict_tol.exit_code == 1 and "beyond atol" in strict_tol.output


def test_readme_polygraphy_commands_work_on_the_dense_graph(tiny_variants, tmp_path):
    polygraphy = str(Path(sys.executable).with_name("polygraphy"))
    root = tiny_variants.manifest.root
    common = ["--onnxrt", "--input-shapes", "image:[1,3,64,64]", "--val-range", "image:[0,1]"]
    first = subprocess.run(
        [polygraphy, "run", str(root / "dense.onnx"), *common, "--save-outputs", str(tmp_path / "fp32.json")],
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    second = subprocess.run(
        [
            polygraphy,
            "run",
            str(root / "fp16" / "dense.onnx"),
            *common,
            "--load-outputs",
            str(tmp_path / "fp32.json"),
            "--atol",
            "1e-2",
            "--rtol",
            "1e-2",
        ],
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0 and "PASSED" in second.stdout + second.stderr


def test_a_checkpoint_compares_at_fp16_with_its_variant_built_into_the_cache(tiny_ckpt, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(sorted((Path(__file__).parents[2] / "moce" / "data" / "samples").glob("*.png"))[0], images)
    args = ["compare", str(tiny_ckpt), "--runners", "onnxruntime,onnxruntime:fp16", "--images", str(images)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output  # was: "no fp16 graphs; run `moce build-engine <cache path>`"
    assert "building the fp16 graphs" in result.output
    assert "fp16" in load_manifest(cached_package_path(tiny_ckpt)).precisions
