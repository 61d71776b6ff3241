"""`moce --help`, `--version` and `moce inspect` through Typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from moce import __version__
from moce.cli.main import app

runner = CliRunner()


def test_help_and_version():
    assert "inspect" in runner.invoke(app, ["--help"]).output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_inspect_table(tiny_ckpt):
    result = runner.invoke(app, ["inspect", str(tiny_ckpt), "--size", "128x64"])
    assert result.exit_code == 0, result.output
    assert "295,302" in result.output and "GFLOPs per image at 128x64" in result.output
    assert (
        len([line for line in result.output.splitlines() if line.strip()[:1].isdigit()]) == 12
    )  # 3 adapters x 4 experts


def test_inspect_json(tiny_ckpt):
    result = runner.invoke(app, ["inspect", str(tiny_ckpt), "--json", "-"])
    info = json.loads(result.output)
    assert info["params"]["total"] == 295_302
    experts = info["adapters"][0]["experts"]
    assert [e["rank"] for e in experts] == [4, 8, 16, 32]
    assert experts[-1]["complexity"] == 1.0
    flops = [e["flops"] for e in experts]
    assert flops == sorted(flops) and flops[0] > 0


def test_inspect_bad_file_exits_nonzero_with_one_line(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_text("nope")
    result = runner.invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and str(bad) in result.output


def test_inspect_reads_a_package_like_its_checkpoint_and_takes_a_square_size(tiny_ckpt, tiny_pkg):
    from_package = json.loads(
        runner.invoke(app, ["inspect", str(tiny_pkg.root), "--size", "128", "--json", "-"]).output
    )
    from_ckpt = json.loads(runner.invoke(app, ["inspect", str(tiny_ckpt), "--size", "128x128", "--json", "-"]).output)
    assert from_package["adapters"] == from_ckpt["adapters"] and from_package["params"] == from_ckpt["params"]
    bad = runner.invoke(app, ["inspect", str(tiny_ckpt), "--size", "big"])
    assert bad.exit_code == 2 and "Invalid value for '--size': 'big': give sizes like 256 or 256x192" in bad.output


def test_json_takes_a_file_or_standard_output_and_the_old_bare_flag_is_one_line(tmp_path, tiny_ckpt):
    result = runner.invoke(app, ["inspect", str(tiny_ckpt), "--json", str(tmp_path / "i.json")])
    assert result.exit_code == 0 and "parameters" in result.output
    assert json.loads((tmp_path / "i.json").read_text())["config"]["dim"] > 0
    printed = runner.invoke(app, ["inspect", str(tiny_ckpt), "--json", "-"])
    assert printed.exit_code == 0 and json.loads(printed.output)["config"]["dim"] > 0
    bare = runner.invoke(app, ["inspect", str(tiny_ckpt), "--json"])  # the flag of moce 0.6, gone in 0.8
    assert bare.exit_code == 2 and bare.stderr.strip() == "error: Option '--json' requires an argument."


def test_an_image_or_a_package_where_a_checkpoint_goes_is_named_for_what_it_is(tmp_path, tiny_pkg):
    photo = tmp_path / "photo.ckpt"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    result = runner.invoke(app, ["inspect", str(photo)])
    assert result.exit_code == 2 and "is a PNG image, not a checkpoint" in result.output
    exported = runner.invoke(app, ["export", str(tiny_pkg.root), "-o", str(tmp_path / "again.moce")])
    assert exported.exit_code == 2 and "is a model package (exported already), not a checkpoint" in exported.output
    assert not (tmp_path / "again.moce").exists()
