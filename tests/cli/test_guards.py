"""Tests generated from the Typer app itself: every option that names a path a command writes is
refused (exit 2, every file unchanged) where it would replace an input, a model file or a foreign
file; every numeric or choice option refuses a bad value in one line before any work. An option
added later is found by its parser (``writes``, ``reads``, a value parser, ``min``/``max``)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from moce.cli.common import reads, writes
from moce.cli.main import app

COMMANDS = typer.main.get_command(app).commands


@pytest.fixture
def world(tmp_path, tiny_pkg, tiny_ckpt, monkeypatch) -> dict[str, Path]:
    """A user's folder: photos, a copy of the package and of the checkpoint, a file of their own."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(photos / name), (rng.random((40, 48, 3)) * 255).astype(np.uint8))
    package = tmp_path / "model.moce"
    shutil.copytree(tiny_pkg.root, package)
    checkpoint = tmp_path / "model.ckpt"
    shutil.copy(tiny_ckpt, checkpoint)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("the user's own notes\n")
    monkeypatch.chdir(tmp_path)
    return {"photos": photos, "photo": photos / "a.png", "pkg": package, "ckpt": checkpoint, "foreign": foreign}


def base_args(w: dict[str, Path]) -> dict[str, tuple[list[str], Path | None]]:
    """Each command's valid arguments in ``w``, and an input it reads."""
    tmp = w["pkg"].parent
    return {
        "inspect": ([str(w["ckpt"])], w["ckpt"]),
        "export": ([str(w["ckpt"]), "-o", str(tmp / "new.moce")], w["ckpt"]),
        "restore": ([str(w["photo"]), str(tmp / "out"), "-m", str(w["pkg"])], w["photo"]),
        "train": ([str(w["photos"]), "-o", str(tmp / "run")], w["photos"]),
        "build-engine": ([str(w["pkg"]), "--onnx-only"], w["pkg"]),
        "compare": ([str(w["pkg"]), "--images", str(w["photos"])], w["photo"]),
        "bench": (["-m", str(w["pkg"]), "--sizes", "32"], w["pkg"]),
        "evaluate": (["--data", str(w["photos"]), "-m", str(w["pkg"])], w["photo"]),
        "demo": (["-m", str(w["pkg"]), "-o", str(tmp / "demo")], w["pkg"]),
        "triton": ([str(w["pkg"]), "-o", str(tmp / "repo")], w["pkg"]),
        "serve": ([str(w["pkg"])], w["pkg"]),
        "install-tritonserver": ([], None),
    }


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def parser_of(param: Any) -> Any:
    return getattr(param.type_descriptor.parameter_info, "parser", None)


def options_of(command: str) -> list[Any]:
    return [p for p in COMMANDS[command].params if p.opts and p.opts[0].startswith("-")]


def invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def test_every_command_has_arguments_here(world):
    assert set(base_args(world)) == set(COMMANDS)


def test_every_path_option_says_whether_the_command_reads_or_writes_it():
    for name, command in COMMANDS.items():
        for param in command.params:
            if param.type_descriptor.annotation in (Path, list[Path]):
                assert parser_of(param) in (reads, writes), f"{name} {param.opts}: declare parser=reads or writes"


def written_options() -> list[tuple[str, str]]:
    return [(name, p.opts[0]) for name in COMMANDS for p in options_of(name) if parser_of(p) is writes]


@pytest.mark.parametrize(("command", "option"), written_options())
def test_a_written_path_never_replaces_an_input_a_model_file_or_a_foreign_file(world, command, option):
    args, source = base_args(world)[command]
    targets = [world["pkg"] / "manifest.json", world["ckpt"], world["foreign"], source]
    before = snapshot(world["pkg"].parent)
    for target in [t for t in targets if t is not None]:
        result = invoke([command, *args, option, str(target)])
        assert result.exit_code == 2, (command, option, target, result.output)
        assert "Traceback" not in result.output
        assert str(target) in result.stderr or target.name in result.stderr, result.stderr
        assert snapshot(world["pkg"].parent) == before, (command, option, target)


def bad_value(param: Any) -> str | None:
    """A value ``param`` must refuse, or None for free text, flags and paths."""
    parser = parser_of(param)
    if hasattr(parser, "invalid"):
        return parser.invalid
    if hasattr(param.callback, "invalid"):
        return param.callback.invalid
    kind = param.type_descriptor.annotation
    if kind not in (int, float):
        return None
    assert param.min is not None or param.max is not None, f"{param.opts}: bound this number with min/max"
    return str(param.min - 1) if param.min is not None else str(param.max + 1)


def valued_options() -> list[tuple[str, str, str]]:
    found = []
    for name in COMMANDS:
        for param in options_of(name):
            if not param.hidden and (value := bad_value(param)) is not None:
                found.append((name, param.opts[0], value))
    return found


@pytest.mark.parametrize(("command", "option", "value"), valued_options())
def test_a_bad_option_value_is_one_line_and_exit_2_before_any_work(world, command, option, value):
    args, _ = base_args(world)[command]
    before = snapshot(world["pkg"].parent)
    result = invoke([command, *args, option, value])
    assert result.exit_code == 2, (command, option, value, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert snapshot(world["pkg"].parent) == before


def test_the_generated_cases_cover_the_options_the_issue_named():
    valued = {(c, o) for c, o, _ in valued_options()}
    for case in [("inspect", "--size"), ("train", "--crop"), ("bench", "--backends"), ("serve", "--http-port"),
                 ("evaluate", "--crops"), ("export", "--opset"), ("triton", "--precision"), ("serve", "--precision"),
                 ("restore", "--threads")]:  # fmt: skip
        assert case in valued, case
    written = set(written_options())
    for case in [("restore", "--report"), ("inspect", "--json"), ("evaluate", "--chart"), ("compare", "--save-results"),
                 ("bench", "--json"), ("demo", "--output"), ("train", "-o"), ("triton", "--output")]:  # fmt: skip
        assert case in written or (case[0], "-o") in written, case
