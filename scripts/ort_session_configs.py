"""Time the ONNX Runtime split plan under several session configs, or of several packages,
interleaved in one process.

    python scripts/ort_session_configs.py build/S.moce 256                    # session configs
    python scripts/ort_session_configs.py build/S.moce 256 build/S_old.moce   # packages, default config

Each round runs every case once on the same image, in a fresh random order (so machine drift hits
all alike); the first round is warm-up. Package comparisons also run eager PyTorch on the first
package's weights, the reference of ``moce bench``. Prints the median per case, its speed-up
against the first case and the largest output difference to it. Used for the spinning, export-rewrite and layer-norm
experiments in docs/performance.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from moce.export.manifest import load_manifest
from moce.runtime.allocator import keep_freed_memory
from moce.runtime.bench import load_reference
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import OnnxRuntimeRunner

CONFIGS: dict[str, dict[str, str]] = {  # merged over moce.runtime.runners.ORT_SESSION_CONFIG
    "spin in a run (default)": {},
    "no spinning": {"session.intra_op.allow_spinning": "0"},
    "spin, never stop": {"session.force_spinning_stop": "0"},
    "default, block base 4": {"session.dynamic_block_base": "4"},
}


def _split_plan(package: str, config: dict[str, str], threads: int, image: np.ndarray) -> Callable[[], np.ndarray]:
    manifest = load_manifest(package)
    runner = OnnxRuntimeRunner(manifest, threads=threads, session_config=config)
    runner.activate()
    executor = PlanExecutor(manifest, runner)
    return lambda: executor.run(image, "split").restored


def _eager(package: str, threads: int, image: np.ndarray) -> Callable[[], np.ndarray]:
    model = load_reference(load_manifest(package), threads, "cpu")
    tensor = torch.from_numpy(image)
    return lambda: model.restore(tensor)[0].numpy()


def main(packages: list[str], size: int, rounds: int = 11, threads: int = 2) -> None:
    keep_freed_memory()  # as `moce bench` does, so the eager times agree with it
    image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    if len(packages) == 1:
        cases = {name: _split_plan(packages[0], config, threads, image) for name, config in CONFIGS.items()}
    else:
        cases = {"torch eager": _eager(packages[0], threads, image)}
        cases |= {package: _split_plan(package, {}, threads, image) for package in packages}
    times: dict[str, list[float]] = {name: [] for name in cases}
    outputs: dict[str, np.ndarray] = {}
    order = np.random.default_rng(1)
    for round_index in range(rounds):
        for name in order.permutation(list(cases)):
            run = cases[name]
            start = time.perf_counter()
            outputs[name] = run()
            if round_index:
                times[name].append((time.perf_counter() - start) * 1e3)
    first = next(iter(cases))
    reference = statistics.median(times[first])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:26s} median {median:8.1f} ms   x{reference / median:.2f}   "
              f"max|d| {np.abs(outputs[name] - outputs[first]).max():.1e}")


if __name__ == "__main__":
    main([sys.argv[1], *sys.argv[3:]], int(sys.argv[2]))
