"""The manifest is parsed into typed records; a malformed one is one PackageError, before any work."""

from __future__ import annotations

import json
import shutil

import pytest

from moce.errors import PackageError
from moce.package.manifest import MANIFEST, AdapterEntry, GraphEntry, load_manifest


@pytest.fixture()
def package(tmp_path, tiny_pkg):
    root = tmp_path / "p.moce"
    shutil.copytree(tiny_pkg.root, root)
    return root


def _rewrite(root, change) -> None:
    data = json.loads((root / MANIFEST).read_text())
    change(data)
    (root / MANIFEST).write_text(json.dumps(data))


def test_a_package_reads_into_typed_records_and_writes_back_the_same_file(package):
    before = (package / MANIFEST).read_text()
    manifest = load_manifest(package)
    assert isinstance(manifest.graphs()["segment0"], GraphEntry)
    assert manifest.graphs()["segment0"].inputs[0].shape == ["batch", 3, "height_0", "width_0"]
    assert [type(a) for a in manifest.adapters()] == [AdapterEntry] * 3
    manifest.write()
    assert (package / MANIFEST).read_text() == before


def _set(path: list, value):  # noqa: ANN202
    def change(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(["input", "size_multiple"], 0), "input.size_multiple: expected a positive integer"),
        (_set(["graphs", "segment0", "file"], None), "graphs.segment0.file: expected str, got nothing"),
        (_set(["graphs", "segment0", "sha256"], 7), "graphs.segment0.sha256: expected str"),
        (_set(["plan", 1, "experts"], "four"), "plan[1].experts: expected a list"),
        (_set(["plan", 0, "kind"], "loop"), "plan[0].kind: expected 'segment' or 'adapter'"),
        (_set(["plan", 0, "graph"], "segment99"), "graph 'segment99' is not in graphs"),
        (_set(["opset"], "17"), "opset: expected int"),
        (_set(["config", "top_k"], "one"), "config:"),
        (lambda data: data["graphs"]["segment0"].pop("sha256"), "graphs.segment0.sha256: missing"),
        (lambda data: data.pop("plan"), "plan: expected a list, got nothing"),
    ],
)
def test_a_malformed_manifest_is_one_error_naming_the_field(package, change, message):
    _rewrite(package, change)
    with pytest.raises(PackageError, match="malformed manifest") as info:
        load_manifest(package)
    assert message in str(info.value) and str(package) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "a manifest is a JSON object, this is a list"),
        (b"\xff\xfe{", "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
        (b'{"schema_version": 1', "invalid JSON"),
    ],
)
def test_a_manifest_that_is_not_a_json_object_is_refused(package, content, message):
    (package / MANIFEST).write_bytes(content)
    with pytest.raises(PackageError, match=message):
        load_manifest(package)


def test_another_schema_version_says_how_to_re_export(package):
    _rewrite(package, _set(["schema_version"], 0))
    with pytest.raises(PackageError, match="schema_version 0, this moce reads 1; re-export .*moce export"):
        load_manifest(package)
