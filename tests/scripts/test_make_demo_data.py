"""scripts/make_demo_data.py never replaces a file it did not write, and refuses before downloading."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "make_demo_data.py"


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _no_download(*_: object) -> None:
    raise AssertionError("the script downloaded before refusing")


def test_a_users_file_where_a_photo_would_go_is_refused_before_any_download(script, tmp_path, monkeypatch):
    mine = tmp_path / "eval" / "Wood.png"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own photo")
    monkeypatch.setattr(script, "unpack", _no_download)
    monkeypatch.setattr(sys, "argv", ["make_demo_data.py", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"eval/Wood\.png exists and is not this script's"):
        script.main()
    assert mine.read_bytes() == b"the user's own photo"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["eval", "eval/Wood.png"]


def test_files_an_earlier_run_listed_may_be_rewritten_and_nothing_else(script, tmp_path):
    planned = script.planned_files()
    listed = [{"file": f, "source": "mate-backgrounds", "licence": "GPL-2+"} for f in planned[:-1]]
    for entry in listed:
        (tmp_path / entry["file"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / entry["file"]).write_bytes(b"png")
    (tmp_path / "manifest.json").write_text(json.dumps(listed[1:]))  # the first file is not listed
    assert script.collisions(tmp_path, planned) == [planned[0]]
    (tmp_path / "manifest.json").write_text(json.dumps({"not": "this script's"}))
    assert script.collisions(tmp_path, planned) == planned  # a foreign manifest.json is not replaced either


def test_the_plan_names_each_file_once_in_every_split(script):
    planned = script.planned_files()
    assert len(planned) == len(set(planned))
    splits = {"train", "train-wide", "eval", "heldout", "train-first", "manifest.json"}
    assert {f.split("/")[0] for f in planned} == splits
    assert "eval/Wood.png" in planned and "train-wide/Kleiber_by_Lukas_Baubkus.png" in planned
