"""`moce triton`: the repository it writes, and its Python-backend model run against a test double
of ``triton_python_backend_utils`` (tests/apps/fake_triton.py). The real server: test_triton_server.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from moce.apps.job import RestoreJob
from moce.apps.restore import restore
from moce.apps.session_options import SessionOptions
from moce.apps.triton import (
    ROUTES,
    ImageService,
    ServeOptions,
    TritonModel,
    config_pbtxt,
    decode_array,
    encode_array,
    write_repository,
)
from moce.cli.main import app
from moce.errors import MoceError
from moce.files import umask
from moce.package.manifest import load_manifest
from tests.apps import fake_triton
from tests.recording import record_calls


class FakeModel(TritonModel):
    pb = fake_triton


def _model(repo_model: Path) -> FakeModel:
    model = FakeModel()
    config = json.dumps({"parameters": _parameters(repo_model / "config.pbtxt")})
    model.initialize({"model_config": config, "model_repository": str(repo_model), "model_version": "1"})
    return model


def _parameters(config: Path) -> dict:
    """The parameters block of a config.pbtxt as Triton hands it to the model (JSON, string values)."""
    pairs = {}
    for line in config.read_text().splitlines():
        if line.strip().startswith("{ key:"):
            key = line.split('key: "')[1].split('"')[0]
            pairs[key] = {"string_value": line.split('string_value: "')[1].split('"')[0]}
    return pairs


@pytest.fixture(scope="module")
def repository(tmp_path_factory, tiny_pkg) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    return write_repository(tiny_pkg.root, out, ServeOptions.of(backend="onnxruntime", threads=1, max_batch_size=4))


def test_repository_holds_config_model_and_a_verified_package_copy(repository, tiny_pkg):
    assert sorted(p.name for p in repository.iterdir()) == [".moce", "1", "config.pbtxt"]
    copy = load_manifest(repository / "1" / "package")
    copy.verify_files()
    assert sorted(copy.file_names()) == sorted(tiny_pkg.file_names())
    text = (repository / "config.pbtxt").read_text()
    for expected in ('backend: "python"', "max_batch_size: 4", "dynamic_batching", "KIND_CPU count: 1"):
        assert expected in text
    assert f'name: "{ROUTES}" data_type: TYPE_INT32 dims: [ 3, 1 ]' in text
    assert "from moce.apps.triton import TritonModel" in (repository / "1" / "model.py").read_text()
    assert ServeOptions.from_parameters(_parameters(repository / "config.pbtxt")) == ServeOptions.of(
        backend="onnxruntime", threads=1, max_batch_size=4
    )


def test_a_shared_repository_keeps_other_models_and_moce_replaces_only_its_own_when_asked(tmp_path, tiny_pkg):
    out = tmp_path / "repo"
    (out / "other" / "1").mkdir(parents=True)
    (out / "other" / "config.pbtxt").write_text('name: "other"\n')
    (out / "README.txt").write_text("mine")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    folder = write_repository(tiny_pkg.root, out, ServeOptions.of(instances=2))
    assert folder == out / "moce" and "KIND_CPU count: 2" in (folder / "config.pbtxt").read_text()
    assert oct(folder.stat().st_mode & 0o777) == oct(0o777 & ~umask())  # as mkdir makes it, not 0700
    with pytest.raises(MoceError, match="holds this model from an earlier `moce triton`; pass --overwrite"):
        write_repository(tiny_pkg.root, out, ServeOptions.of(instance_kind="gpu"))
    write_repository(tiny_pkg.root, out, ServeOptions.of(instance_kind="gpu"), overwrite=True)
    assert "KIND_GPU count: 1" in (out / "moce" / "config.pbtxt").read_text()
    write_repository(tiny_pkg.root, out, ServeOptions(), name="second")
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "moce", "other", "second"]  # nothing left over
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # staged beside it, and cleaned up
    assert {p: p.read_bytes() for p in before} == before
    (out / "theirs").mkdir()
    (out / "theirs" / "keep.txt").write_text("mine")
    for name in ("theirs", "other"):
        with pytest.raises(MoceError, match="holds files that moce did not write"):
            write_repository(tiny_pkg.root, out, ServeOptions(), name=name, overwrite=True)
    assert (out / "theirs" / "keep.txt").read_text() == "mine"
    with pytest.raises(MoceError, match="a Triton model name"):
        write_repository(tiny_pkg.root, out, ServeOptions(), name="../up")
    with pytest.raises(MoceError, match="instance-kind"):
        ServeOptions.of(instance_kind="tpu")


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "rgb8": (rng.random((40, 56, 3)) * 255).astype(np.uint8),
        "gray16": (rng.random((48, 40, 1)) * 65535).astype(np.uint16),
        "rgba8": (rng.random((32, 48, 4)) * 255).astype(np.uint8),
    }


def _as_file(image: np.ndarray) -> np.ndarray:
    """What cv2 writes for an RGB(A)/gray ``[H, W, C]`` array."""
    if image.shape[2] == 1:
        return image[:, :, 0]
    return image[:, :, [2, 1, 0, 3][: image.shape[2]]]


def test_served_images_equal_local_restore_of_the_same_png(tmp_path, repository, tiny_pkg):
    (tmp_path / "in").mkdir()
    for name, image in _images().items():
        cv2.imwrite(str(tmp_path / "in" / f"{name}.png"), _as_file(image))
    restore(
        RestoreJob(tmp_path / "in", tmp_path / "out", tiny_pkg.root, SessionOptions(backend="onnxruntime", threads=1))
    )
    model = _model(repository)
    for name, image in _images().items():
        key = "IMAGE_UINT16" if image.dtype == np.uint16 else "IMAGE"
        (response,) = model.execute([fake_triton.InferenceRequest({key: image[None]})])
        assert response.error is None, response.error
        served = response.output("RESTORED_UINT16" if key == "IMAGE_UINT16" else "RESTORED")[0]
        local = cv2.imread(str(tmp_path / "out" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert served.dtype == image.dtype and np.array_equal(_as_file(served), local), name
        assert response.output(ROUTES).shape == (1, 3, 1)
    model.finalize()


def test_bad_requests_get_one_line_errors_and_the_rest_of_the_batch_is_answered(repository):
    model = _model(repository)
    good = np.zeros((2, 16, 24, 3), np.uint8)
    requests = [
        fake_triton.InferenceRequest({"IMAGE": np.zeros((1, 4, 4, 3), np.uint8)}, id="tiny"),
        fake_triton.InferenceRequest({"IMAGE": good}, id="ok"),
        fake_triton.InferenceRequest({"IMAGE": np.zeros((1, 16, 16, 5), np.uint8)}, id="five"),
        fake_triton.InferenceRequest({}, id="empty"),
        fake_triton.InferenceRequest({"IMAGE_UINT16": good.astype(np.uint16)}, ["RESTORED"], id="asks"),
        fake_triton.InferenceRequest({"IMAGE": good[:1]}, id="ok2"),
    ]
    responses = model.execute(requests)
    errors = {r.id: (str(s.error) if s.error else None) for r, s in zip(requests, responses)}
    assert errors["ok"] is None and errors["ok2"] is None
    assert "request tiny: image is 4x4" in errors["tiny"]
    assert "request five: expected [N, H, W, C] with C = 1, 3 or 4" in errors["five"]
    assert "request empty: send exactly one of the inputs" in errors["empty"]
    assert "answered in RESTORED_UINT16" in errors["asks"]
    assert all("\n" not in e for e in errors.values() if e)
    assert responses[1].output("RESTORED").shape == good.shape
    assert responses[0].error.code == fake_triton.TritonError.INVALID_ARG
    model.finalize()


def test_same_sized_images_of_several_requests_run_as_one_batch(tiny_pkg):
    service = ImageService(load_manifest(tiny_pkg.root), ServeOptions.of(backend="onnxruntime", max_batch_size=8))
    image = np.zeros((2, 16, 16, 3), np.uint8)
    calls = record_calls(service.session.choice.runner)
    service.restore([(image, "a"), (image, "b"), (image[:1], "c")])
    batches = [batch for graph, batch in calls if graph.startswith("segment")]
    assert set(batches) == {5}
    service.close()


def test_arrays_convert_like_image_files():
    for image in _images().values():
        rgb, info = decode_array(image, "x")
        assert rgb.dtype == np.float32 and rgb.shape == (*image.shape[:2], 3)
        assert np.array_equal(encode_array(rgb, info), image)


def test_triton_command_writes_a_repository(tmp_path, tiny_pkg):
    out = tmp_path / "repo"
    result = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "-o", str(out), "--instances", "2"])
    assert result.exit_code == 0, result.output
    assert "KIND_CPU count: 2" in (out / "moce" / "config.pbtxt").read_text()
    again = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "-o", str(out), "--instances", "3"])
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    again = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "-o", str(out), "--instances", "3", "--overwrite"])
    assert again.exit_code == 0 and "KIND_CPU count: 3" in (out / "moce" / "config.pbtxt").read_text()
    bad = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "-o", str(out), "--max-batch-size", "0"])
    assert bad.exit_code == 2 and "'--max-batch-size': Input should be greater than or equal to 1" in bad.output


def test_config_names_the_model(tiny_pkg):
    assert config_pbtxt(tiny_pkg, ServeOptions(), "restorer").startswith('name: "restorer"')


def test_a_gpu_instance_sees_only_its_own_gpu(repository, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.setattr("moce.apps.session_options.nvidia_gpu_present", lambda: True)  # as on a GPU machine
    model = FakeModel()
    config = json.dumps({"parameters": _parameters(repository / "config.pbtxt")})
    args = {"model_config": config, "model_repository": str(repository), "model_version": "1"}
    model.initialize({**args, "model_instance_kind": "GPU", "model_instance_device_id": "2"})
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    model.finalize()


def test_a_failed_server_is_reported_by_the_first_error_line_of_its_log_and_the_log_path(tmp_path):
    from moce.apps.tritonserver import TritonServer

    server = TritonServer.__new__(TritonServer)  # only its log is read here
    server.log_path = tmp_path / "repo.tritonserver.log"
    server.log_path.write_text(
        "I1208 10:00:00.1 1 server.cc:1] starting\n"
        'E1208 10:00:00.5 1 server.cc:241] "CudaDriverHelper has not been initialized."\n'  # harmless without a GPU
        "E1208 10:00:01.2 1 model_lifecycle.cc:2] failed to load 'moce' version 1: Invalid argument: bad\n"
        "I1208 10:00:02.3 1 server.cc:3] unloading\n"
        "error: creating server: Internal - failed to load all models\n"
    )
    summary = server.log_summary()
    assert summary.startswith("E1208 10:00:01.2 1 model_lifecycle.cc:2] failed to load 'moce'")
    assert summary.endswith(f"(log: {server.log_path})") and "\n" not in summary


def test_triton_and_serve_open_the_served_session_before_writing_or_starting(tmp_path, tiny_pkg):
    out = tmp_path / "repo"
    result = CliRunner().invoke(app, ["triton", str(tiny_pkg.root), "-o", str(out), "--precision", "fp16"])
    assert result.exit_code == 2 and "no fp16 graphs" in result.output, result.output
    assert not out.exists()
    served = CliRunner().invoke(app, ["serve", str(tiny_pkg.root), "--precision", "int8", "--http-port", "1"])
    assert served.exit_code == 2 and len(served.output.strip().splitlines()) == 1


def test_replacing_a_model_folder_deletes_nothing_else_and_puts_it_back_on_failure(tmp_path, tiny_pkg, monkeypatch):
    out = tmp_path / "repo"
    write_repository(tiny_pkg.root, out, ServeOptions.of(instances=2))
    (tmp_path / "mine.old").mkdir()  # names near moce's temporaries are left alone
    (tmp_path / "mine.old" / "keep.txt").write_text("mine")
    before = (out / "moce" / "config.pbtxt").read_bytes()
    real = Path.rename

    def failing(self: Path, target: Path) -> Path:
        if self.name.startswith(".repo.moce.") and not self.name.count(".old."):
            raise OSError("disk full")  # the staged folder cannot be moved into place
        return real(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk full"):
        write_repository(tiny_pkg.root, out, ServeOptions.of(instances=3), overwrite=True)
    monkeypatch.undo()
    assert (out / "moce" / "config.pbtxt").read_bytes() == before  # the earlier model, back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.old", "repo"]  # no temporaries left
    assert (tmp_path / "mine.old" / "keep.txt").read_text() == "mine"


def test_install_tritonserver_refuses_a_folder_it_did_not_unpack_before_any_download(tmp_path, monkeypatch):
    from moce.apps import tritonserver

    monkeypatch.setattr(tritonserver.subprocess, "run", lambda *a, **k: pytest.fail("downloaded before the check"))
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "notes.txt").write_text("mine")
    with pytest.raises(MoceError, match="holds files that moce did not write"):
        tritonserver.install_server(tmp_path / "tools")
    assert (tmp_path / "tools" / "notes.txt").read_text() == "mine"
    (tmp_path / "old" / "pytriton").mkdir(parents=True)  # what moce 0.7.5 and earlier unpacked: accepted
    tritonserver.check_install_folder(tmp_path / "old")
    (tmp_path / "old" / "notes.txt").write_text("mine")  # ... until it holds something else
    with pytest.raises(MoceError, match="holds files that moce did not write"):
        tritonserver.check_install_folder(tmp_path / "old")
