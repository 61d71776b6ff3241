"""`moce export` writes a package whose three routing forms reproduce PyTorch and the golden data."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from moce.apps.export import export_and_validate
from moce.cli.main import app
from moce.errors import ExportError, PackageError, ValidationError
from moce.model import MoCEIR, load_checkpoint
from moce.package.manifest import load_manifest
from moce.package.writer import ExportOptions, export_package
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import OnnxRuntimeRunner
from moce.runtime.validate import ops_in, validate_package


@pytest.fixture(scope="module")
def tiny_package(tiny_export):
    return tiny_export


@pytest.mark.parametrize("mode", ["split", "conditional", "dense"])
def test_each_form_reproduces_the_golden_outputs_and_routes(tiny_package, golden_io, mode):
    with OnnxRuntimeRunner(tiny_package.manifest) as runner:
        result = PlanExecutor(tiny_package.manifest, runner).run(golden_io["input"], mode)
    np.testing.assert_allclose(result.restored, golden_io["output"], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.stack([r.experts[:, 0] for r in result.routings], 1), golden_io["routes"])


def test_no_graph_has_dft_loops_or_custom_domains(tiny_package):
    m = tiny_package.manifest
    for name in m.graph_entries:
        ops = list(ops_in(onnx.load(str(m.graph_file(name))).graph))
        assert ops, name
        assert not {op for op, _ in ops} & {"DFT", "STFT", "Loop", "Scan"}, name
        assert {domain for _, domain in ops} <= {"", "ai.onnx"}, name


def test_conditional_graph_routes_with_if_and_dense_has_none(tiny_package):
    m = tiny_package.manifest
    cond = [op for op, _ in ops_in(onnx.load(str(m.graph_file("conditional"))).graph)]
    dense = [op for op, _ in ops_in(onnx.load(str(m.graph_file("dense"))).graph)]
    assert cond.count("If") == 3 * 3  # 3 adapters, a chain of 3 Ifs over 4 experts each
    assert "If" not in dense and dense.count("ScatterElements") == 3


def test_manifest_describes_everything_a_runtime_needs(tiny_package, tiny_ckpt):
    data = json.loads((tiny_package.manifest.root / "manifest.json").read_text())
    assert data["schema_version"] == 1
    assert data["source"]["sha256"] == load_checkpoint(tiny_ckpt).sha256
    assert data["config"]["dim"] == 8 and data["opset"] == 17
    assert {"torch", "onnx", "onnxruntime", "moce"} <= set(data["created_by"])
    kinds = [s["kind"] for s in data["plan"]]
    assert kinds == ["segment", "adapter"] * 3 + ["segment"]
    adapter = data["plan"][1]
    assert [e["graph"] for e in adapter["experts"]] == [f"adapter0.expert{e}" for e in range(4)]
    flops = [e["flops_per_pixel"] for e in adapter["experts"]]
    assert flops == sorted(flops) and flops[0] > 0
    seg = data["graphs"]["segment0"]
    assert seg["inputs"][0] == {"name": "image", "shape": ["batch", 3, "height_0", "width_0"], "dtype": "float32"}
    assert data["validation"]["passed"] is True
    tiny_package.manifest.verify_files()


def test_tampered_graph_is_refused(tiny_package, tmp_path):
    import shutil

    copy = tmp_path / "copy.moce"
    shutil.copytree(tiny_package.manifest.root, copy)
    (copy / "split" / "segment1.onnx").write_bytes(b"garbage")
    with pytest.raises(PackageError, match="segment1.onnx"):
        load_manifest(copy).verify_files()


def test_validation_gathers_every_failure(tiny_pkg, tiny_model):
    broken = MoCEIR(tiny_model.config)
    broken.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        broken.output.weight.add_(0.5)  # PyTorch now disagrees with every exported form
    report = validate_package(tiny_pkg, broken, sizes=((64, 64),), batches=(1, 2))
    assert len(report.failures) == 10  # 5 forms (split, conditional, dense, tiles-local, tiles-imposed) x 2 batch sizes
    with pytest.raises(ValidationError) as info:
        report.raise_if_failed()
    assert len(info.value.failures) == 10 and "split batch 1 64x64" in str(info.value)


def test_existing_output_is_not_clobbered(tmp_path, tiny_ckpt):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "photo.png").write_bytes(b"not moce's")
    for options in (ExportOptions(validate=False), ExportOptions(validate=False, overwrite=True)):
        with pytest.raises(ExportError, match="keep.txt.*moce replaces only a moce package folder|--overwrite"):
            export_package(tiny_ckpt, out, options)
    result = CliRunner().invoke(app, ["export", str(tiny_ckpt), "-o", str(out), "--overwrite"])
    assert result.exit_code == 2 and "moce replaces only a moce package folder" in result.output
    assert (out / "keep.txt").read_text() == "mine" and (out / "photo.png").read_bytes() == b"not moce's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]  # no staging folder left behind
    (tmp_path / "file.moce").write_text("a file")
    with pytest.raises(ExportError, match="exists and is not a folder"):
        export_package(tiny_ckpt, tmp_path / "file.moce", ExportOptions(validate=False, overwrite=True))


def test_a_package_is_replaced_only_when_asked_and_only_when_it_holds_nothing_else(tmp_path, tiny_ckpt, tiny_pkg):
    fast = ExportOptions(validate=False, conditional=False, dense=False, tiles=False)
    out = tmp_path / "p.moce"
    shutil.copytree(tiny_pkg.root, out)  # a package moce wrote
    first = load_manifest(out)
    with pytest.raises(ExportError, match="holds a moce package; pass --overwrite"):
        export_package(tiny_ckpt, out, fast)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"holds files that are not part of its package \(notes.txt\)"):
        export_package(tiny_ckpt, out, replace(fast, overwrite=True))
    (out / "notes.txt").unlink()
    second = export_package(tiny_ckpt, out, replace(fast, overwrite=True)).manifest
    assert first.has_graph("dense") and not second.has_graph("dense")
    load_manifest(out).verify_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.moce"]  # the old copy is gone, nothing else left


def test_cli_export_prints_a_summary(tmp_path, tiny_ckpt):
    result = CliRunner().invoke(
        app, ["export", str(tiny_ckpt), "-o", str(tmp_path / "t.moce"), "--sizes", "64x64", "--batches", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "validation passed on 5 cases" in result.output and "dense.onnx" in result.output
    assert (tmp_path / "t.moce" / "manifest.json").is_file()


def test_cli_export_bad_checkpoint_exits_2(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_text("no")
    result = CliRunner().invoke(app, ["export", str(bad), "-o", str(tmp_path / "x.moce")])
    assert result.exit_code == 2 and "error:" in result.output
    assert not (tmp_path / "x.moce").exists()


def test_top_k_two_skips_the_conditional_form_and_validates_the_rest(tmp_path, tiny_model):
    model = MoCEIR(replace(tiny_model.config, top_k=2))
    model.load_state_dict(tiny_model.state_dict())
    result = export_and_validate(model, tmp_path / "k2.moce", ExportOptions(sizes=((64, 64),), batches=(2,)))
    assert not result.manifest.has_graph("conditional")
    assert "top-1" in result.manifest.routing_form("conditional")
    assert {c.mode for c in result.report.cases} == {"split", "dense", "tiles-local", "tiles-imposed"}


def test_every_package_file_gets_the_umask_mode(tiny_pkg):
    modes = {p.name: p.stat().st_mode & 0o777 for p in tiny_pkg.root.rglob("*") if p.is_file()}
    assert len(set(modes.values())) == 1, modes  # weights.safetensors was 0600 while the graphs were 0644
