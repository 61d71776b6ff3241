"""`moce bench --tiling`: the whole restore path per tiling policy, scored against the first."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from moce.apps.bench_tiling import parse_tilings
from moce.cli.main import app
from moce.errors import InputError


def test_bench_tiling_times_each_policy_against_the_others(tiny_pkg, tmp_path):
    out = tmp_path / "tiling.json"
    args = ["bench", "--model", str(tiny_pkg.root), "--tiling", "untiled,128", "--sizes", "200x296"]
    result = CliRunner().invoke(app, [*args, "--backends", "onnxruntime", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["written_by"] == "moce bench --tiling"
    rows = saved["cases"]
    assert [r["tiling"] for r in rows] == ["untiled", "128"]
    assert rows[0]["plan"]["tile"] is None and rows[1]["plan"]["tile"] == "128x128"
    assert rows[1]["plan"]["tiles"] == 6 and rows[1]["plan"]["passes"] == 3
    assert 30 < rows[1]["psnr_vs_first"] < float("inf")
    assert rows[1]["speedup_vs"]["untiled"] == pytest.approx(rows[0]["median_s"] / rows[1]["median_s"])
    assert rows[0]["peak_bytes"] > 0
    assert "200x296 128: x" in result.output


def test_unknown_tiling_policies_are_refused_before_work():
    with pytest.raises(InputError, match="auto, untiled or a tile side"):
        parse_tilings("auto,big")


def test_bench_tiling_json_never_replaces_an_input_the_model_or_a_foreign_file(tiny_pkg, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes((tiny_pkg.root / "manifest.json").read_bytes()[:64])  # any bytes: refused before reading
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"mine": true}')
    targets = [photo, tiny_pkg.root / "bench.json", tiny_pkg.root / "manifest.json", foreign, tmp_path]
    before = {p: p.read_bytes() for p in (photo, foreign, tiny_pkg.root / "manifest.json")}
    for target in targets:
        args = ["bench", "--model", str(tiny_pkg.root), "--tiling", "untiled", "--sizes", "64", "--photo", str(photo)]
        result = CliRunner().invoke(app, [*args, "--json", str(target)])
        assert result.exit_code == 2, (target, result.output)
        assert str(target) in result.output and "restore " not in result.output  # refused before any case ran
    assert {p: p.read_bytes() for p in before} == before
    assert not (tiny_pkg.root / "bench.json").exists()
