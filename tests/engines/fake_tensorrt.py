"""A test double of the TensorRT calls moce makes (moce/engines/tensorrt.py).

It proves moce's logic around TensorRT (profiles, caching, engine records in the manifest, staleness), not
TensorRT itself: "engines" are JSON records of what the builder was asked to do.
"""

from __future__ import annotations

import json
from types import SimpleNamespace


class FakeTensorRT:
    __version__ = "10.99.0-fake"
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")

    def __init__(self) -> None:
        self.builds: list[dict] = []
        self.fail_parse = False

    def Builder(self, logger):  # noqa: N802 - TensorRT's spelling
        return _Builder(self)

    def OnnxParser(self, network, logger):  # noqa: N802
        return _Parser(self, network)


class _Builder:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.trt = trt

    def create_network(self, flags: int):
        return SimpleNamespace(flags=flags, source=None)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        record = {
            "source": network.source,
            "strongly_typed": bool(network.flags & (1 << 5)),
            "workspace": config.workspace,
            "profiles": [p.shapes for p in config.profiles],
        }
        self.trt.builds.append(record)
        config.cache_data = config.cache_data + b"+"
        return json.dumps(record).encode()


class _Parser:
    def __init__(self, trt: FakeTensorRT, network) -> None:
        self.trt, self.network = trt, network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        self.network.source = path
        if self.trt.fail_parse:
            self.num_errors = 1
            return False
        return True

    def get_error(self, index: int) -> str:
        return "fake parse error"


class _Config:
    def __init__(self) -> None:
        self.workspace = None
        self.profiles: list[_Profile] = []
        self.cache_data = b""

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self.workspace = size

    def create_timing_cache(self, data: bytes):
        self.cache_data = bytes(data)
        return self

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> None:
        pass

    def get_timing_cache(self):
        return SimpleNamespace(serialize=lambda: self.cache_data)

    def add_optimization_profile(self, profile) -> None:
        self.profiles.append(profile)


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, list] = {}

    def set_shape(self, name: str, lo, opt, hi) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]
