"""A test double of the TensorRT calls moce makes (moce/engines/tensorrt_builder.py).

It proves moce's logic around TensorRT (profiles, caching, engine records in the manifest, staleness), not
TensorRT itself: "engines" are JSON records of what the builder was asked to do. Each class names the
TensorRT class it stands for (``trt_class``); its public names are only the members listed for that class
in ``moce.runtime.tensorrt_runner.TENSORRT_API`` (checked against the real bindings), so the double cannot
invent API. Its own state is private, apart from ``TEST_STATE``, which only tests read or set.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64}


class FakeTensorRT:
    trt_class = "tensorrt"
    TEST_STATE = ("builds", "fail_parse", "programs")
    __version__ = "10.99.0-fake"
    Logger = type("Logger", (), {"trt_class": "Logger", "WARNING": 2, "__init__": lambda self, level=None: None})
    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    TensorIOMode = type("TensorIOMode", (), {"trt_class": "TensorIOMode", "OUTPUT": "out"})
    DataType = type("DataType", (), {"trt_class": "DataType", **{name: name for name in DTYPES}})

    def __init__(self) -> None:
        self.builds: list[dict] = []
        self.fail_parse = False
        self.programs: dict[bytes, Program] = {}  # engine file contents -> what the engine computes

    def Runtime(self, logger):  # noqa: N802
        return _Runtime(self)

    def Builder(self, logger):  # noqa: N802 - TensorRT's spelling
        return _Builder(self)

    def OnnxParser(self, network, logger):  # noqa: N802
        return _Parser(self, network)


class _Network:
    trt_class = "INetworkDefinition"

    def __init__(self, flags: int) -> None:
        self._flags, self._source = flags, None


class _Builder:
    trt_class = "Builder"

    def __init__(self, trt: FakeTensorRT) -> None:
        self._trt = trt

    def create_network(self, flags: int):
        return _Network(flags)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        record = {
            "source": network._source,
            "strongly_typed": bool(network._flags & (1 << 5)),
            "workspace": config._workspace,
            "profiles": [p._shapes for p in config._profiles],
        }
        self._trt.builds.append(record)
        config._cache = _TimingCache(config._cache._data + b"+")
        return json.dumps(record).encode()


class _Parser:
    trt_class = "OnnxParser"

    def __init__(self, trt: FakeTensorRT, network: _Network) -> None:
        self._trt, self._network = trt, network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        self._network._source = path
        if self._trt.fail_parse:
            self.num_errors = 1
            return False
        return True

    def get_error(self, index: int) -> str:
        return "fake parse error"


class _TimingCache:
    trt_class = "ITimingCache"

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    def serialize(self) -> bytes:
        return self._data


class _Config:
    trt_class = "IBuilderConfig"

    def __init__(self) -> None:
        self._workspace = None
        self._profiles: list[_Profile] = []
        self._cache = _TimingCache(b"")

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self._workspace = size

    def create_timing_cache(self, data: bytes) -> _TimingCache:
        return _TimingCache(data)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> None:
        self._cache = cache

    def get_timing_cache(self) -> _TimingCache:
        return self._cache

    def add_optimization_profile(self, profile) -> None:
        self._profiles.append(profile)


class _Profile:
    trt_class = "IOptimizationProfile"

    def __init__(self) -> None:
        self._shapes: dict[str, list] = {}

    def set_shape(self, name: str, lo, opt, hi) -> None:
        self._shapes[name] = [list(lo), list(opt), list(hi)]


class Program:
    """What a fake engine computes: its inputs and outputs (name -> DataType member), the output
    shapes from the input shapes, and the outputs from the inputs (NumPy)."""

    def __init__(
        self,
        inputs: dict[str, str],
        outputs: dict[str, str],
        shapes: Callable[[dict[str, tuple]], dict[str, tuple]],
        compute: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    ) -> None:
        self.inputs, self.outputs, self.shapes, self.compute = inputs, outputs, shapes, compute


class _Runtime:
    trt_class = "Runtime"

    def __init__(self, trt: FakeTensorRT) -> None:
        self._trt = trt

    def deserialize_cuda_engine(self, data: bytes):
        return _Engine(self._trt.programs[data])


class _Engine:
    trt_class = "ICudaEngine"

    def __init__(self, program: Program) -> None:
        self._program = program
        self._names = [*program.inputs, *program.outputs]
        self.num_io_tensors = len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> str:
        return "out" if name in self._program.outputs else "in"

    def get_tensor_dtype(self, name: str) -> str:
        return {**self._program.inputs, **self._program.outputs}[name]

    def create_execution_context(self):
        return _Context(self._program)


class _Context:
    """Reads inputs from and writes outputs to raw addresses, as TensorRT does; asks the stream
    whether each input may be read on it yet."""

    trt_class = "IExecutionContext"

    def __init__(self, program: Program) -> None:
        self._program = program
        self._shapes: dict[str, tuple] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._addresses[name] = address
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return self._program.shapes(self._shapes)[name]

    def execute_async_v3(self, stream_handle: int) -> bool:
        stream = CpuStream.by_handle[stream_handle]
        feeds = {}
        for name, kind in self._program.inputs.items():
            stream.check_readable(self._addresses[name])
            feeds[name] = _view(self._addresses[name], self._shapes[name], DTYPES[kind]).copy()
        shapes = self._program.shapes(self._shapes)
        for name, value in self._program.compute(feeds).items():
            _view(self._addresses[name], shapes[name], DTYPES[self._program.outputs[name]])[...] = value
        stream.launches.append(sorted(feeds))
        return True


def _view(address: int, shape: tuple, dtype) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * count).from_address(address), dtype=dtype).reshape(shape)


class CpuStream:
    """A stand-in for moce.runtime.tensorrt_runner.CudaStream on the CPU, that checks stream order: a tensor
    the caller made on its own stream may be read only after :meth:`wait_for_caller`."""

    by_handle: dict[int, CpuStream] = {}

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.handle = 1000 + len(CpuStream.by_handle)
        CpuStream.by_handle[self.handle] = self
        self.syncs = 0
        self.launches: list[list[str]] = []
        self._unsynced: set[int] = set()  # addresses of caller tensors not yet waited for

    def scope(self):
        return contextlib.nullcontext()

    def caller_tensor(self, array: np.ndarray):
        """A tensor the caller made on another stream (not yet visible to this one)."""
        tensor = self.torch.from_numpy(np.ascontiguousarray(array))
        self._unsynced.add(tensor.data_ptr())
        return tensor

    def wait_for_caller(self) -> None:
        self._unsynced.clear()

    def check_readable(self, address: int) -> None:
        if address in self._unsynced:
            raise AssertionError("an input made on another stream was read without an event wait")

    def empty(self, shape: tuple, dtype):
        return self.torch.empty(shape, dtype=dtype)

    def upload(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array)).clone()

    def download(self, tensor) -> np.ndarray:
        self.syncs += 1
        return tensor.detach().numpy().copy()


DOUBLES = (
    FakeTensorRT,
    FakeTensorRT.Logger,
    FakeTensorRT.TensorIOMode,
    FakeTensorRT.DataType,
    _Network,
    _Builder,
    _Parser,
    _TimingCache,
    _Config,
    _Profile,
    _Runtime,
    _Engine,
    _Context,
)
"""Every class of the double, for the API check."""
