"""The TensorRT API moce uses exists in the real bindings of TensorRT 10.x and 11.x, and the test
double defines nothing else.

TensorRT's builder cannot be installed here, but ``tensorrt-cu12-bindings`` wheels can: each holds the
real ``tensorrt.so`` (not importable without libnvinfer) whose class, method and enum names are
readable strings. The newest 10.x and 11.x wheels are fetched from the package registry into a cache
(``MOCE_TEST_WHEELS``, default ``~/.cache/moce-test/wheels``); without the registry these tests skip.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from moce.runtime.tensorrt_runner import TENSORRT_API
from tests.engines.fake_tensorrt import DOUBLES, FakeTensorRT

ROOT = Path(__file__).parents[2]
WHEELS = Path(os.environ.get("MOCE_TEST_WHEELS", Path.home() / ".cache" / "moce-test" / "wheels"))
MOCE_TRT_MODULES = (ROOT / "moce" / "engines" / "tensorrt_builder.py", ROOT / "moce" / "runtime" / "tensorrt_runner.py")


def _fetch(series: str) -> Path:
    """The newest ``tensorrt-cu12-bindings`` wheel of ``series`` (10 or 11), from the cache or the registry."""
    folder = WHEELS / f"trt{series}"
    found = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder)]
        command += ["--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]
        done = subprocess.run([*command, f"tensorrt-cu12-bindings=={series}.*"], capture_output=True, text=True)
        found = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
        if done.returncode != 0 or not found:
            pytest.skip(f"cannot fetch tensorrt-cu12-bindings {series}.x from the package registry")
    return found[-1]


class Bindings:
    """The names a bindings wheel defines: strings of its ``tensorrt.so`` and its ``__init__.py``."""

    def __init__(self, wheel: Path) -> None:
        with zipfile.ZipFile(wheel) as archive:
            self.binary = archive.read("tensorrt_bindings/tensorrt.so")
            self.python = archive.read("tensorrt_bindings/__init__.py").decode()
        self.version = wheel.name.split("-")[1]

    def has(self, name: str) -> bool:
        """Whether ``name`` is a string of the extension (possibly tail-merged into a longer one by
        the linker, so it is looked up as a NUL-terminated suffix) or defined by ``__init__.py``."""
        return name.encode() + b"\0" in self.binary or f"\n{name} = " in self.python or f"def {name}(" in self.python

    def missing(self, api: dict[str, tuple[str, ...]]) -> list[str]:
        names = [c for c in api if c != "tensorrt"] + [f"{c}.{m}" for c, members in api.items() for m in members]
        return [n for n in names if not self.has(n.rsplit(".", 1)[-1])]


@pytest.fixture(scope="module", params=["10", "11"])
def bindings(request) -> Bindings:
    return Bindings(_fetch(request.param))


def test_every_tensorrt_name_moce_uses_is_in_the_real_bindings(bindings):
    assert bindings.missing(TENSORRT_API) == [], f"TensorRT {bindings.version}"


def test_a_misspelt_or_removed_name_is_caught(bindings):
    assert bindings.missing({"IBuilderConfig": ("set_memory_pool_limt",), "Builder": ("create_netwrk",)}) == [
        "IBuilderConfig.set_memory_pool_limt",
        "Builder.create_netwrk",
    ]
    if bindings.version.startswith("11"):  # implicit batch is gone in TensorRT 11
        assert bindings.missing({"NetworkDefinitionCreationFlag": ("EXPLICIT_BATCH",)}) != []


def _public_names(cls: type) -> set[str]:
    """Class attributes and methods, and the attributes its methods set on ``self``, not private."""
    names = {n for n in vars(cls) if not n.startswith("_")} | ({"__version__"} if "__version__" in vars(cls) else set())
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):  # made with type(): no source, its attributes are all in vars()
        tree = ast.Module(body=[], type_ignores=[])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and getattr(node.value, "id", "") == "self"
        ):
            names.add(node.attr)
    return {n for n in names if not n.startswith("_") or n == "__version__"} - {"trt_class", "TEST_STATE"}


def test_the_double_defines_only_listed_api():
    for cls in DOUBLES:
        extra = _public_names(cls) - set(TENSORRT_API[cls.trt_class]) - set(FakeTensorRT.TEST_STATE)
        assert not extra, f"{cls.__name__} stands for {cls.trt_class} but defines {sorted(extra)}"


def test_the_list_has_no_entry_moce_does_not_use():
    source = "\n".join(p.read_text() for p in MOCE_TRT_MODULES)
    used = lambda m: re.search(rf"\.{m}\b|[\"']{m}[\"']", source)  # noqa: E731 - an attribute, or a name in a table
    unused = [m for members in TENSORRT_API.values() for m in members if not used(m)]
    assert unused == []
    assert not any(re.search(rf"\.{name}\b", source) for name in FakeTensorRT.TEST_STATE)  # nor the double's state


class _Invented:
    trt_class = "Builder"

    def __init__(self) -> None:
        self.max_batch_size = 8  # gone since TensorRT 10: a double must not offer it

    def create_network(self, flags: int) -> None: ...

    def build_engine(self, network, config) -> None: ...  # noqa: ANN001 - TensorRT 8's call, gone in 10


def test_an_invented_member_of_a_double_is_caught():
    assert _public_names(_Invented) - set(TENSORRT_API["Builder"]) == {"build_engine", "max_batch_size"}
