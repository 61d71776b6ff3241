"""The manifest is parsed into typed records; a malformed one is one PackageError, before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import moce
from moce.errors import PackageError
from moce.package.manifest import MANIFEST, AdapterEntry, GraphEntry, load_manifest
from moce.runtime.resolve import open_model


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
        (_set(["graphs", "segment0", "sha256"], 7), "graphs.segment0.sha256: expected str, got int"),
        (_set(["plan", 1, "experts"], "four"), "plan[1].experts: expected array, got str"),
        (_set(["plan", 0, "kind"], "loop"), "plan[0].kind: invalid value 'loop'"),
        (_set(["plan", 0, "graph"], "segment99"), "graph 'segment99' is not in graphs"),
        (_set(["opset"], "17"), "opset: expected int, got str"),
        (_set(["config", "top_k"], "one"), "config:"),
        (lambda data: data["graphs"]["segment0"].pop("sha256"), "graphs.segment0.sha256: missing"),
        (lambda data: data.pop("plan"), "plan: missing"),
        (_set(["plan", 2, "index"], True), "plan[2].index: expected int, got bool"),
        (_set(["engines"], [{"graph": "segment0"}]), "engines[0].precision: missing"),
        (_set(["precisions"], {"fp16": {"graphs": {"segment0": {"file": 1}}}}), "precisions.fp16.graphs.segment0.file"),
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


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("../x.onnx", "graphs.segment0.file: '../x.onnx' leads outside the package"),
        ("split/../../x.onnx", "leads outside the package"),
        ("/etc/passwd", "graphs.segment0.file: '/etc/passwd' is an absolute path"),
        ("", "is not a plain relative path"),
    ],
)
def test_a_file_outside_the_package_is_refused_by_the_schema(package, file, message):
    _rewrite(package, _set(["graphs", "segment0", "file"], file))
    with pytest.raises(PackageError, match="malformed manifest") as info:
        load_manifest(package)
    assert message in str(info.value)


def test_a_symlink_leading_out_is_refused_even_with_the_right_hash(package, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(package / "split" / "segment0.onnx", outside)  # a genuine graph, same hash
    (package / "split" / "segment0.onnx").unlink()
    (package / "split" / "segment0.onnx").symlink_to(outside)
    with pytest.raises(PackageError, match="leads outside the package"):
        load_manifest(package).verify_files()


@pytest.mark.parametrize("location", ["segment0.weights", "../segment0.weights"])
def test_graphs_that_read_external_data_are_refused_even_when_hashed(package, location):
    """External data is covered by no hash, so it is refused wherever it lies."""
    import onnx

    from moce.package.manifest import sha256_bytes

    path = package / "split" / "segment0.onnx"
    model = onnx.load(str(path))
    onnx.external_data_helper.convert_model_to_external_data(model, location="segment0.weights", size_threshold=0)
    onnx.save_model(model, str(path))
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:  # point it where onnx itself would not write it
        for entry in tensor.external_data:
            entry.value = location if entry.key == "location" else entry.value
    path.write_bytes(model.SerializeToString())
    _rewrite(package, _set(["graphs", "segment0", "sha256"], sha256_bytes(path.read_bytes())))
    with pytest.raises(PackageError, match=f"segment0.onnx: reads weights from external data .*{location}"):
        load_manifest(package).verify_files()


def test_a_hostile_package_stops_restore_before_any_work_with_exit_2(package, tmp_path):
    from typer.testing import CliRunner

    from moce.cli.main import app

    _rewrite(package, _set(["weights", "file"], "/etc/passwd"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")
    result = CliRunner().invoke(app, ["restore", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(package)])
    assert result.exit_code == 2 and "weights.file: '/etc/passwd' is an absolute path" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_package_written_by_0_7_4_opens_and_restores_as_today(tiny_pkg, tmp_path):
    """tests/data/manifest_0.7.4.json: `moce export` of the tiny checkpoint by moce 0.7.4; its graphs
    and weights are byte for byte today's, so today's files under that manifest pass every check."""
    old = tmp_path / "old.moce"
    shutil.copytree(tiny_pkg.root, old)
    shutil.copy(Path(__file__).parents[1] / "data" / "manifest_0.7.4.json", old / MANIFEST)
    assert json.loads((old / MANIFEST).read_text())["created_by"]["moce"] == "0.7.4"
    manifest = open_model(old)
    image = np.random.default_rng(2).random((24, 32, 3), dtype=np.float32)
    with moce.open(old, backend="onnxruntime", threads=1) as then:
        before = then.restore(image).image
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as now:
        assert np.array_equal(before, now.restore(image).image)
    assert manifest.config == tiny_pkg.config
