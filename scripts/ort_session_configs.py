"""Time the ONNX Runtime split plan under several session configs, or of several packages,
interleaved in one process.

    python scripts/ort_session_configs.py build/S.moce 256                    # session configs
    python scripts/ort_session_configs.py build/S.moce 256 build/S_old.moce   # packages, default config

Each round runs every case once on the same image (so machine drift hits all alike); the first
round is warm-up. Prints the median per case and the largest output difference to the first.
Used for the spinning and export-rewrite experiments in docs/performance.md.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from moce.export.manifest import load_manifest
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import OnnxRuntimeRunner

CONFIGS: dict[str, dict[str, str]] = {
    "no spinning (default)": {},
    "spin, stop after run": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    "spin, stop, block base 4": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1",
                                 "session.dynamic_block_base": "4"},
}


def main(packages: list[str], size: int, rounds: int = 6, threads: int = 2) -> None:
    cases = ({name: (packages[0], config) for name, config in CONFIGS.items()} if len(packages) == 1
             else {package: (package, {}) for package in packages})
    image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    executors = {}
    for name, (package, config) in cases.items():
        manifest = load_manifest(package)
        runner = OnnxRuntimeRunner(manifest, threads=threads, session_config=config)
        runner.activate()
        executors[name] = PlanExecutor(manifest, runner)
    times: dict[str, list[float]] = {name: [] for name in cases}
    outputs: dict[str, np.ndarray] = {}
    for round_index in range(rounds):
        for name, executor in executors.items():
            start = time.perf_counter()
            outputs[name] = executor.run(image, "split").restored
            if round_index:
                times[name].append((time.perf_counter() - start) * 1e3)
    first = outputs[next(iter(cases))]
    for name, samples in times.items():
        print(f"{name:26s} median {statistics.median(samples):8.1f} ms   max|d| {np.abs(outputs[name] - first).max():.1e}")


if __name__ == "__main__":
    main([sys.argv[1], *sys.argv[3:]], int(sys.argv[2]))
