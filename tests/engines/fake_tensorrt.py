"""A test double of the TensorRT calls moce makes (moce/engines/tensorrt.py).

It proves moce's logic around TensorRT (profiles, caching, engine records in the manifest, staleness), not
TensorRT itself: "engines" are JSON records of what the builder was asked to do. Each class names the
TensorRT class it stands for (``trt_class``); its public names are only the members listed for that class
in ``moce.runtime.tensorrt.TENSORRT_API`` (checked against the real bindings), so the double cannot
invent API. Its own state is private, apart from ``TEST_STATE``, which only tests read or set.
"""

from __future__ import annotations

import json
from types import SimpleNamespace


class FakeTensorRT:
    trt_class = "tensorrt"
    TEST_STATE = ("builds", "fail_parse")
    __version__ = "10.99.0-fake"
    Logger = type("Logger", (), {"trt_class": "Logger", "WARNING": 2, "__init__": lambda self, level=None: None})
    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")

    def __init__(self) -> None:
        self.builds: list[dict] = []
        self.fail_parse = False

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


DOUBLES = (FakeTensorRT, FakeTensorRT.Logger, _Network, _Builder, _Parser, _TimingCache, _Config, _Profile)
"""Every class of the double, for the API check."""
