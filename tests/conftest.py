"""Shared fixtures: the golden data copied from the original implementation (tests/data/golden)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moce.apps.export import export_and_validate
from moce.data import TINY_MODEL
from moce.engines.build import BuildOptions, build

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


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_ckpt):
    """The tiny checkpoint exported and validated as `moce export` does, once per test session."""
    return export_and_validate(tiny_ckpt, tmp_path_factory.mktemp("pkg") / "tiny.moce")


@pytest.fixture(scope="session")
def tiny_pkg(tiny_export):
    return tiny_export.manifest


@pytest.fixture(scope="session")
def tiny_variants(tmp_path_factory, tiny_pkg):
    """A copy of the tiny package with its fp16 and int8 variants (ONNX only)."""
    root = tmp_path_factory.mktemp("variants") / "tiny.moce"
    shutil.copytree(tiny_pkg.root, root)
    return build(root, BuildOptions(precisions=["fp16", "int8"], onnx_only=True))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MOCE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


FIRST = ("test_moceir_s.py",)
"""The longest files: run first, so that a parallel run does not end waiting on one of them."""


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need a CUDA device, `trt` tests the tensorrt package: skip cleanly otherwise.
    The longest files go first (see :data:`FIRST`); the order is otherwise kept."""
    items.sort(key=lambda item: item.path.name not in FIRST)
    import importlib.util

    import torch

    has_gpu = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "trt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs TensorRT: pip install 'moce[trt]'"))
