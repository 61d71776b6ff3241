"""The backend table: what each name makes, what `auto` picks on a machine without a GPU, and refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from moce.errors import InputError, MissingDependencyError, MoceError
from moce.package.manifest import EngineEntry
from moce.runtime import backends
from moce.runtime.backends import BACKENDS, make_runner
from moce.runtime.runners import OnnxRuntimeRunner, TorchRunner


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(backends, "nvidia_gpu_present", lambda: False)


def test_auto_without_a_gpu_runs_onnxruntime_on_the_cpu(tiny_pkg, no_gpu):
    choice = make_runner("auto", tiny_pkg)
    assert choice.name == "onnxruntime" and isinstance(choice.runner, OnnxRuntimeRunner)
    assert choice.runner.providers == ["CPUExecutionProvider"] and "no GPU" in choice.reason


def test_auto_passes_over_tensorrt_engines_without_tensorrt(tiny_pkg, monkeypatch):
    monkeypatch.setattr(
        tiny_pkg, "engines", [EngineEntry("segment0", "fp32", "e", "0" * 64, "0" * 64, "10", "gpu", "9.0", [], "d")]
    )
    monkeypatch.setattr(backends, "cuda_available", lambda: True)  # a GPU is there: only TensorRT's absence decides

    def missing() -> None:
        raise MissingDependencyError("TensorRT is not installed")

    monkeypatch.setattr(backends, "import_tensorrt", missing)
    assert backends.BACKENDS["tensorrt"].auto(tiny_pkg, None, "fp32") is None
    monkeypatch.setattr(backends, "import_tensorrt", lambda: None)  # the same machine with TensorRT: taken
    assert backends.BACKENDS["tensorrt"].auto(tiny_pkg, None, "fp32") == "TensorRT engines and a GPU found"
    assert backends.BACKENDS["tensorrt"].auto(tiny_pkg, "cpu", "fp32") is None
    assert backends.BACKENDS["tensorrt"].auto(tiny_pkg, None, "fp16") is None  # no fp16 engines recorded


def test_each_named_backend_makes_its_runner(tiny_pkg):
    assert isinstance(make_runner("onnxruntime", tiny_pkg, device="cpu").runner, OnnxRuntimeRunner)
    torch_choice = make_runner("torch", tiny_pkg, device="cpu")
    assert isinstance(torch_choice.runner, TorchRunner) and torch_choice.reason == "requested"
    assert list(BACKENDS) == ["tensorrt", "onnxruntime", "torch"]  # the order auto tries them in


@pytest.mark.parametrize(
    ("backend", "precision", "message"),
    [
        ("tensorflow", "fp32", "unknown backend 'tensorflow'"),
        ("onnxruntime", "fp8", "unknown precision 'fp8'"),
        ("torch", "int8", "int8 needs onnxruntime or tensorrt"),
        ("onnxruntime", "bf16", "the onnxruntime backend runs fp32, fp16, int8, not bf16"),
        ("auto", "bf16", "runs on the torch backend only"),
        ("onnxruntime", "fp16", "no fp16 graphs; run `moce build-engine"),
    ],
)
def test_impossible_choices_are_refused_in_one_line(tiny_pkg, no_gpu, backend, precision, message):
    with pytest.raises(MoceError, match=message) as caught:
        make_runner(backend, tiny_pkg, precision=precision)
    assert "\n" not in str(caught.value)


def test_tensorrt_without_tensorrt_names_the_extra(tiny_pkg, monkeypatch):
    def missing():
        raise MissingDependencyError("TensorRT is not installed; pip install 'moce[trt]'")

    monkeypatch.setattr(backends, "import_tensorrt", missing)
    with pytest.raises(MissingDependencyError, match=r"moce\[trt\]"):
        make_runner("tensorrt", tiny_pkg)


@pytest.mark.parametrize(
    ("backend", "routing", "message"),
    [
        ("tensorrt", "conditional", "the tensorrt backend runs split routing"),
        ("torch", "dense", "the torch backend runs split or conditional routing"),
    ],
)
def test_a_named_backend_is_refused_a_routing_form_it_cannot_run_before_it_loads(
    tiny_pkg, monkeypatch, backend, routing, message
):
    monkeypatch.setattr(backends, "import_tensorrt", lambda: pytest.fail("loaded TensorRT before refusing"))
    with pytest.raises(InputError, match=message):
        make_runner(backend, tiny_pkg, device="cpu", routing=routing)


def test_auto_passes_over_a_backend_that_cannot_run_the_routing_form(tiny_pkg, monkeypatch):
    runner = OnnxRuntimeRunner(tiny_pkg)  # stands in for a TensorRT runner: only the choice is checked
    usable = replace(BACKENDS["tensorrt"], make=lambda *_: (runner, "CUDA"), auto=lambda *_: "engines and a GPU")
    monkeypatch.setitem(BACKENDS, "tensorrt", usable)
    assert make_runner("auto", tiny_pkg, device="cpu", routing="split").name == "tensorrt"
    assert make_runner("auto", tiny_pkg, device="cpu", routing="dense").name == "onnxruntime"
