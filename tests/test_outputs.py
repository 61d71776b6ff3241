"""The output guard: what it refuses, and how it knows what moce wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest

from moce.files import write_json_atomic
from moce.imageio import write_chart
from moce.outputs import MARKER, OutputError, Planned, check_writes, mark_folder, signature_of, signed


def test_signatures_are_read_from_json_png_and_folder_markers(tmp_path):
    write_json_atomic(tmp_path / "r.json", signed({"a": 1}, "moce bench"))
    write_chart(tmp_path / "c.png", np.zeros((8, 8, 3), np.uint8), "moce evaluate")
    mark_folder(tmp_path / "run", "moce train")
    (tmp_path / "plain.json").write_text(json.dumps({"written_by": 3}))
    write_chart(tmp_path / "x.jpg", np.zeros((8, 8, 3), np.uint8), "moce evaluate")  # JPEG holds no signature
    assert signature_of(tmp_path / "r.json") == "moce bench"
    assert signature_of(tmp_path / "c.png") == "moce evaluate"
    assert signature_of(tmp_path / "run") == "moce train" and (tmp_path / "run" / MARKER).is_file()
    assert signature_of(tmp_path / "plain.json") is None
    assert signature_of(tmp_path / "x.jpg") is None
    assert signature_of(tmp_path / "missing") is None


def test_a_rerun_replaces_its_own_file_and_nothing_else(tmp_path):
    own = tmp_path / "own.json"
    write_json_atomic(own, signed({}, "moce compare"))
    check_writes([Planned(own, "--json", "moce compare")])
    for signature in ("moce bench", "moce compare --other"):
        with pytest.raises(OutputError, match="was written by `moce compare`"):
            check_writes([Planned(own, "--json", signature)])
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(OutputError, match="notes.json: --json exists and was not written by moce"):
        check_writes([Planned(tmp_path / "notes.json", "--json", "moce compare")])


def test_inputs_what_lies_inside_them_and_shared_paths_are_refused(tmp_path):
    package = tmp_path / "p.moce"
    package.mkdir()
    (package / "manifest.json").write_text("{}")
    photo = tmp_path / "a.png"
    photo.write_bytes(b"x")
    cases = {
        "is an input of this command": [Planned(photo, "--json", "moce x")],
        "lies inside": [Planned(package / "new.json", "--json", "moce x")],
        "is also given to --json": [Planned(tmp_path / "o.json", "--json", "moce x")] * 2,
        "writes a .png file": [Planned(tmp_path / "c.jpg", "--chart", "moce x", suffix=".png")],
        "cannot be created": [Planned(photo / "r.json", "--report", "moce x")],
        "is a folder": [Planned(package, "--json", "moce x")],
        "holds files that moce did not write": [Planned(package, "-o", "moce x", folder=True)],
        "exists and is not a folder": [Planned(photo, "-o", "moce y", folder=True)],
    }
    for why, planned in cases.items():
        with pytest.raises(OutputError, match=why):
            check_writes(
                planned, reads=[package, photo] if why in ("is an input of this command", "lies inside") else []
            )
    check_writes([Planned(tmp_path / "new", "-o", "moce x", folder=True), Planned(None, "--json", "moce x")])
    check_writes([Planned(tmp_path / "-", "--json", "moce x")])  # a file named '-' in a folder: only new ones
    check_writes([Planned(type(photo)("-"), "--json", "moce x")], reads=[photo])  # standard output


def test_an_empty_folder_and_a_marked_one_may_be_written(tmp_path):
    (tmp_path / "empty").mkdir()
    check_writes([Planned(tmp_path / "empty", "-o", "moce demo", folder=True)])
    mark_folder(tmp_path / "demo", "moce demo")
    (tmp_path / "demo" / "sheet.png").write_bytes(b"x")
    check_writes([Planned(tmp_path / "demo", "-o", "moce demo", folder=True)])
    with pytest.raises(OutputError, match="was written by `moce demo`"):
        check_writes([Planned(tmp_path / "demo", "-o", "moce train", folder=True)])
