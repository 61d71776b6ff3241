"""The public Session: one set-up under every front end, so an image restored anywhere is the same.

`moce.open(...).restore(array)` is compared bit for bit with `moce restore` of the same PNG, and
so are a Ray worker's output and the Triton model's answer, for ONNX Runtime and PyTorch, fp32
and fp16, whole and in tiles (three passes at fp32; one at fp16, settled in one place).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import moce
from moce.apps.cluster import ImageWorker
from moce.apps.job import RestoreJob
from moce.apps.session import Session
from moce.apps.session_options import SessionOptions, settle
from moce.apps.triton import ServeOptions, write_repository
from moce.cli.main import app
from moce.errors import InputError, PackageError
from tests.apps import fake_triton
from tests.apps.test_triton import FakeModel, _parameters

TILE, OVERLAP = 32, 8
SIZES = {"whole": (24, 32), "tiled": (72, 88)}  # the tiled one is larger than a tile: 3 x 4 tiles


def _rgb(shape: tuple[int, int], seed: int = 7) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory, tiny_variants):
    """`moce restore` of one PNG per size, per backend and precision: the reference every front end meets."""
    root = tmp_path_factory.mktemp("cli")
    for name, shape in SIZES.items():
        (root / "in").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "in" / f"{name}.png"), _rgb(shape)[:, :, ::-1])
    outputs = {}
    for backend in ("onnxruntime", "torch"):
        for precision in ("fp32", "fp16"):
            out = root / f"{backend}-{precision}"
            args = ["restore", str(root / "in"), str(out), "-m", str(tiny_variants.manifest.root)]
            args += ["--backend", backend, "--precision", precision, "--tile", str(TILE), "--overlap", str(OVERLAP)]
            result = CliRunner().invoke(app, [*args, "--threads", "1"])
            assert result.exit_code == 0, result.output
            outputs[(backend, precision)] = out
    return root / "in", outputs


def _served(repository: Path, image: np.ndarray) -> np.ndarray:
    model = FakeModel()
    config = json.dumps({"parameters": _parameters(repository / "config.pbtxt")})
    model.initialize({"model_config": config, "model_repository": str(repository), "model_version": "1"})
    try:
        (response,) = model.execute([fake_triton.InferenceRequest({"IMAGE": image[None]})])
        assert response.error is None, response.error
        return response.output("RESTORED")[0]
    finally:
        model.finalize()


@pytest.mark.slow
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_every_front_end_restores_the_bytes_moce_restore_writes(
    tmp_path, tiny_variants, cli_outputs, backend, precision, size
):
    inputs, outputs = cli_outputs
    package = tiny_variants.manifest.root
    expected = cv2.imread(str(outputs[(backend, precision)] / f"{size}.png"))[:, :, ::-1]
    image = _rgb(SIZES[size])
    options = {"backend": backend, "precision": precision, "tile": TILE, "overlap": OVERLAP, "threads": 1}

    with moce.open(package, **options) as session:  # the Python API
        result = session.restore(image)
        assert result.tiles == (1 if size == "whole" else 12 * (3 if precision == "fp32" else 1))
    assert result.image.dtype == np.uint8 and np.array_equal(result.image, expected)

    job = RestoreJob(
        inputs,
        tmp_path / "ray",
        package,
        SessionOptions(backend=backend, precision=precision, tile=TILE, overlap=OVERLAP, threads=1),
    )
    source, out = inputs / f"{size}.png", tmp_path / "ray" / f"{size}.png"
    worker = ImageWorker(job, str(package), {str(source): str(out)})  # what each Ray actor runs
    (record,) = worker({"path": np.array([str(source)])})["record"]
    assert json.loads(record)["status"] == "ok", record
    assert out.read_bytes() == (outputs[(backend, precision)] / f"{size}.png").read_bytes()

    serve = ServeOptions.of(
        backend=backend, precision=precision, tile=TILE, overlap=OVERLAP, threads=1, max_batch_size=1
    )
    repository = write_repository(package, tmp_path / "repo", serve)
    assert np.array_equal(_served(repository, image), expected)


def test_the_tile_pass_rule_lives_in_one_place():
    assert settle(SessionOptions(precision="fp32"))[0].passes() == 1  # --tile auto: tiles as large as memory allows
    assert settle(SessionOptions(precision="fp32", tile=512))[0].passes() == 3
    options, note = settle(SessionOptions(precision="fp16", tile=512))
    assert options.passes() == 1
    assert note == "tile passes: 1 (image-wide sums run in the fp32 tile graphs only, not at fp16)"
    assert settle(SessionOptions(precision="fp16"))[0].passes() == 1
    served = ServeOptions().session_options()  # served images: as `moce restore --tile 512`
    assert (served.tile, served.tile_passes) == (512, 3)


def test_a_session_takes_arrays_of_every_layout_and_keeps_it(tiny_pkg):
    rng = np.random.default_rng(1)
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as session:
        for image in (
            (rng.random((24, 32, 3)) * 255).astype(np.uint8),
            (rng.random((24, 32, 4)) * 65535).astype(np.uint16),
            (rng.random((24, 32)) * 255).astype(np.uint8),
            (rng.random((24, 32, 1)) * 255).astype(np.uint8),
            rng.random((24, 32, 3), dtype=np.float32),
        ):
            result = session.restore(image)
            assert result.image.shape == image.shape and result.image.dtype == image.dtype
            assert len(result.routes) == tiny_pkg.config.num_adapters and result.seconds > 0
        if image.ndim == 3 and image.shape[2] == 4:
            assert np.array_equal(result.image[:, :, 3], image[:, :, 3])
        with pytest.raises(InputError, match="image 0: .*at least 8"):
            session.restore(np.zeros((4, 32, 3), np.uint8))
        with pytest.raises(InputError, match="NaN"):
            session.restore(np.full((16, 16, 3), np.nan, np.float32))
        with pytest.raises(
            InputError, match=r"float pixel values lie in \[0, 255\]; moce takes float images in \[0, 1\]"
        ):
            session.restore(np.linspace(0, 255, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3))


def test_restore_file_never_restores_a_photo_in_place(tiny_pkg, tmp_path):
    photo = tmp_path / "x.png"
    cv2.imwrite(str(photo), np.full((16, 16, 3), 80, np.uint8))
    before = photo.read_bytes()
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as session:
        for dest in (photo, tmp_path / "." / "x.png"):
            with pytest.raises(InputError, match="is the input; overwrite replaces earlier outputs"):
                session.restore_file(photo, dest, overwrite=True)
    assert photo.read_bytes() == before


def test_the_one_pass_note_is_said_only_when_an_image_is_tiled(tiny_variants):
    said: list[str] = []
    options = SessionOptions(backend="onnxruntime", precision="fp16", tile=32, overlap=8, threads=1)
    with Session(tiny_variants.manifest, options, said.append) as session:
        session.restore_rgb([np.full((24, 24, 3), 0.5, np.float32)])
        assert not any("tile passes" in s for s in said)
        session.restore_rgb([np.full((72, 80, 3), 0.5, np.float32)] * 2)
    assert [s for s in said if "tile passes" in s] == [
        "tile passes: 1 (image-wide sums run in the fp32 tile graphs only, not at fp16)"
    ]


def test_restore_many_batches_same_sized_images_and_keeps_their_order(tiny_pkg):
    images = [_rgb((16, 24), 1), _rgb((24, 16), 2), _rgb((16, 24), 3)]
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as one:
        alone = [one.restore(image).image for image in images]
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1, batch=4) as session:
        runner, calls = session.choice.runner, []
        infer = runner.infer
        runner.infer = lambda graph, feeds: (
            calls.append((graph, len(next(iter(feeds.values()))))) or infer(graph, feeds)
        )
        together = session.restore_many(images)
    assert [r.image.shape for r in together] == [i.shape for i in images]
    for a, b in zip(alone, together):
        assert np.abs(a.astype(int) - b.image.astype(int)).max() <= 1
    assert [n for graph, n in calls if graph == "segment0"] == [2, 1]  # the two same-sized images in one call


def test_restore_file_writes_what_moce_restore_writes_and_refuses_to_overwrite(tmp_path, tiny_pkg):
    cv2.imwrite(str(tmp_path / "a.png"), _rgb((40, 48))[:, :, ::-1])
    result = CliRunner().invoke(
        app, ["restore", str(tmp_path / "a.png"), str(tmp_path / "cli"), "-m", str(tiny_pkg.root), "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as session:
        session.restore_file(tmp_path / "a.png", tmp_path / "api" / "a.png")
        assert (tmp_path / "api" / "a.png").read_bytes() == (tmp_path / "cli" / "a.png").read_bytes()
        with pytest.raises(InputError, match="exists; pass overwrite=True"):
            session.restore_file(tmp_path / "a.png", tmp_path / "api" / "a.png")
        cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((24, 32, 3), np.uint16))
        with pytest.raises(InputError, match="16-bit samples would become 8-bit in .jpg; pass allow_lossy=True"):
            session.restore_file(tmp_path / "deep.png", tmp_path / "api" / "deep.jpg")
        assert not (tmp_path / "api" / "deep.jpg").exists()
        session.restore_file(tmp_path / "deep.png", tmp_path / "api" / "deep.jpg", allow_lossy=True)


def test_describe_says_what_runs(tiny_pkg):
    session = moce.open(tiny_pkg.root, backend="onnxruntime", precision="fp32", tile=64, overlap=8)
    described = session.describe()
    assert described["backend"] == "onnxruntime" and described["precision"] == "fp32"
    assert described["tiling"] == {"tile": 64, "overlap": 8, "route_per": "image", "passes": 3}
    assert len(described["adapters"]) == tiny_pkg.config.num_adapters
    assert all(len(a["experts"]) == tiny_pkg.config.num_experts for a in described["adapters"])
    assert "Session(" in repr(session)


def test_bad_options_and_missing_graphs_are_refused_before_the_backend_loads(tiny_pkg, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the backend was loaded")

    monkeypatch.setattr("moce.runtime.runners.OnnxRuntimeRunner.activate", no_loading)
    for options, message in (
        ({"tile": 0}, "--tile"),
        ({"route_per": "pixel"}, "--route-per must be one of image, tile, got pixel"),
        ({"routing": "magic"}, "--routing must be one of"),
        ({"batch": 0}, "--batch"),
        ({"backend": "onnxruntime", "precision": "int8"}, "no int8 graphs"),
        ({"backend": "onnxruntime", "compile": True}, "--compile compiles the torch backend's model"),
        ({"threads": 0}, "--threads must be at least 1"),
    ):
        with pytest.raises((InputError, PackageError), match=message):
            moce.open(tiny_pkg.root, **options)


def test_a_module_opens_like_its_checkpoint(tiny_model, tiny_pkg, monkeypatch):
    # a module's export is validated by the code a checkpoint's is (test_restore.py runs it); skipped here for time
    monkeypatch.setattr("moce.runtime.resolve._validated", lambda manifest, net, progress: None)
    image = _rgb((24, 32))
    with moce.open(tiny_model, backend="onnxruntime", threads=1) as from_module:
        a = from_module.restore(image)
    with Session(tiny_pkg, SessionOptions(backend="onnxruntime", threads=1)) as from_package:
        b = from_package.restore(image)
    assert np.array_equal(a.image, b.image) and a.routes == b.routes


def test_importing_moce_loads_neither_torch_nor_onnxruntime():
    heavy = "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'cv2') if m in sys.modules))"
    for code, loaded in (("import sys, moce", "[]"), ("import sys, moce; moce.open, moce.Session", "['onnx']")):
        out = subprocess.run([sys.executable, "-c", f"{code}; {heavy}"], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == loaded, code
    assert set(moce.__all__) >= {"open", "Session", "SessionOptions", "RestoreResult", "MoceError"}


@pytest.mark.parametrize("routing", ["split", "dense"])
def test_activation_loads_what_every_image_runs_and_leaves_experts_to_their_first_use(tiny_pkg, routing):
    with moce.open(tiny_pkg.root, backend="onnxruntime", routing=routing, threads=1) as session:
        loaded = set(session.choice.runner._sessions)
        trunk = {n for n in tiny_pkg.plan_graphs() if n.startswith("segment")}
        assert loaded == (trunk if routing == "split" else {"dense"})
        result = session.restore(_rgb((24, 32)))
        chosen = set(session.choice.runner._sessions) - loaded
        assert len(chosen) == (sum(len(set(experts)) for experts in result.routes) if routing == "split" else 0)


@pytest.mark.parametrize(
    "precision, bf16_units, warned",
    [
        ("fp16", False, "fp16 on the CPU"),
        ("bf16", False, "no bfloat16 units"),
        ("bf16", True, None),
        ("fp32", False, None),
    ],
)
def test_a_slow_precision_chosen_on_a_cpu_says_what_is_faster(tiny_pkg, monkeypatch, precision, bf16_units, warned):
    monkeypatch.setattr("moce.apps.session_options.cpu_bf16_units", lambda: bf16_units)
    said: list[str] = []
    moce.open(tiny_pkg.root, backend="torch", device="cpu", precision=precision, progress=said.append)
    warnings = [line for line in said if line.startswith("warning:")]
    assert (warnings == []) if warned is None else (len(warnings) == 1 and warned in warnings[0]), said
    assert all("--precision fp32 is faster here" in line for line in warnings)


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux's /proc")
def test_a_long_lived_session_keeps_its_memory_flat_over_1000_images(tiny_pkg):
    rng = np.random.default_rng(4)
    images = [(rng.random((24, 32, 3)) * 255).astype(np.uint8) for _ in range(8)]
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as session:
        for i in range(100):  # warm: every expert loaded, the allocator at its working size
            session.restore(images[i % len(images)])
        warm = _resident_mb()
        for i in range(900):
            session.restore(images[i % len(images)])
        grown = _resident_mb() - warm
    assert grown < 25, f"resident memory grew by {grown:.1f} MB over 900 images"


def test_restore_folder_restores_with_an_open_session_and_leaves_it_open(tiny_pkg, tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        cv2.imwrite(str(tmp_path / "in" / name), np.full((24, 32, 3), 100, np.uint8))
    (tmp_path / "in" / "notes.txt").write_text("x")
    with moce.open(tiny_pkg.root, backend="onnxruntime", threads=1) as session:
        summary = moce.restore_folder(
            session, tmp_path / "in", tmp_path / "out", recursive=True, report=tmp_path / "r.json"
        )
        assert summary.exit_code == 0 and len(summary.restored) == 2 and len(summary.skipped) == 1
        assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "sub" / "b.png").is_file()
        assert json.loads((tmp_path / "r.json").read_text())["totals"]["ok"] == 2
        again = moce.restore_folder(session, [tmp_path / "in" / "a.png"], tmp_path / "one", overwrite=True)
        assert again.exit_code == 0 and (tmp_path / "one" / "a.png").is_file()  # the session is still open
