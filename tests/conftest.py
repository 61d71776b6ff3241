"""Shared fixtures: the golden data copied from the original implementation (tests/data/golden)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import pytest
from filelock import FileLock

from moce.apps.export import export_and_validate
from moce.data import DEFAULT_MODEL, TINY_MODEL
from moce.engines.build import BuildOptions, BuildResult, build
from moce.export import graphs
from moce.files import write_bytes_atomic
from moce.package.manifest import Manifest
from moce.package.writer import ExportResult

T = TypeVar("T")

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
TINY_CKPT = TINY_MODEL


@pytest.fixture(scope="session")
def tiny_ckpt() -> Path:
    return TINY_CKPT


@pytest.fixture(scope="session")
def golden_io() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "moceir_tiny_io.npz") as data:
        return {k: data[k] for k in data.files}


def manifest(name: str) -> dict:
    return json.loads((GOLDEN / f"moceir_{name}_manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_model():
    from moce.model import load_model

    return load_model(TINY_CKPT)[0]


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every pytest-xdist worker of this run sees (the parent of their base folders), so that
    what a session makes once is made once per run, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], T]) -> T:
    """``make(shared folder / name)`` run by the first worker that asks for ``name``; the others wait
    for it and get the same result (pickled beside it)."""
    path = shared_folder(tmp_path_factory) / name
    record = path.with_name(f"{name}.pickle")
    with FileLock(f"{path}.lock"):
        if record.exists():
            return pickle.loads(record.read_bytes())
        made = make(path)
        record.write_bytes(pickle.dumps(made))
        return made


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_ckpt) -> ExportResult:
    """The tiny checkpoint exported and validated as `moce export` does, once per test run. Shared by
    every test: copy it before changing anything in it."""
    return made_once(tmp_path_factory, "tiny.moce", lambda path: export_and_validate(tiny_ckpt, path))


@pytest.fixture(scope="session")
def tiny_pkg(tiny_export) -> Manifest:
    return tiny_export.manifest


@pytest.fixture(scope="session")
def demo_pkg(tmp_path_factory) -> Manifest:
    """The bundled demo model exported once per run (about 15 s): routing that tells tasks apart."""
    return made_once(tmp_path_factory, "demo.moce", lambda path: export_and_validate(DEFAULT_MODEL, path)).manifest


@pytest.fixture(scope="session")
def tiny_variants(tmp_path_factory, tiny_pkg) -> BuildResult:
    """A copy of the tiny package with its fp16 and int8 variants (ONNX only), made once per run."""

    def make(root: Path) -> BuildResult:
        shutil.copytree(tiny_pkg.root, root)
        return build(root, BuildOptions(precisions=["fp16", "int8"], onnx_only=True))

    return made_once(tmp_path_factory, "variants.moce", make)


@pytest.fixture(scope="session", autouse=True)
def _simplify_each_graph_once(tmp_path_factory):
    """onnxslim is a pure function of the traced graph (traces are byte-identical from run to run) and
    half the time of an export: the suite exports the tiny model's graphs many times, so each traced
    graph is simplified once per run and the result reused by every worker."""
    folder = shared_folder(tmp_path_factory) / "simplified"
    folder.mkdir(exist_ok=True)
    simplify = graphs.simplify

    def once(model: onnx.ModelProto) -> onnx.ModelProto:
        path = folder / f"{hashlib.sha256(model.SerializeToString()).hexdigest()}.onnx"
        if path.exists():
            return onnx.load(path)
        made = simplify(model)
        write_bytes_atomic(path, made.SerializeToString())
        return made

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graphs, "simplify", once)
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MOCE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def pytest_configure(config):
    """Under pytest-xdist, each worker keeps to a core of its own: with two workers each running
    PyTorch's and ONNX Runtime's thread pools over both cores, the suite took 16 CPU-minutes and
    10 min 13 s on 2 cores, against 10 CPU-minutes and 7 min 30 s pinned. Child processes (the
    console-script tests) inherit the core."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker and len(cores) > 1:
        os.sched_setaffinity(0, {cores[int(worker.removeprefix("gw")) % len(cores)]})
        import torch

        torch.set_num_threads(1)


FIRST = (
    "test_moceir_s.py",
    "test_cluster.py",
    "test_restore.py",
    "test_session.py",
    "test_video.py",
    "test_export.py",
    "test_restore_signals.py",
    "test_tiling.py",
    "test_resolve.py",
    "test_bench.py",
    "test_compare.py",
    "test_triton_server.py",
    "test_trainer.py",
)
"""The longest files, longest first: a parallel run (``--dist loadfile --no-loadscope-reorder``)
hands them out first and ends on short ones, so that no worker is left waiting on a long file."""


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need a CUDA device, `trt` tests the tensorrt package: skip cleanly otherwise.
    The longest files go first (see :data:`FIRST`); the order is otherwise kept."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))
    import importlib.util

    import torch

    has_gpu = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "trt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT: pip install 'moce[trt]'"))
