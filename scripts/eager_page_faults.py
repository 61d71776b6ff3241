"""Eager PyTorch with glibc's malloc defaults and with freed memory kept (moce.runtime.allocator):
time and minor page faults per run, with the ONNX Runtime split plan timed alongside as a yardstick
(its arena keeps its buffers, so it should not move).

    python scripts/eager_page_faults.py build/S.moce 512 [--rounds 4] [--threads 2]

Each setting runs in its own process (the setting is process-wide and cannot be undone), one after
the other; within a process the two cases alternate and the first round is an untimed warm-up.
Used for the session-10 finding in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _measure(package: str, size: int, rounds: int, threads: int) -> dict[str, dict[str, float]]:
    import torch

    from moce.export.manifest import load_manifest
    from moce.runtime.allocator import keep_freed_memory
    from moce.runtime.bench import load_reference
    from moce.runtime.executor import PlanExecutor
    from moce.runtime.runners import OnnxRuntimeRunner

    kept = keep_freed_memory()  # False when MOCE_MALLOC_DEFAULTS=1
    manifest = load_manifest(package)
    image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    runner = OnnxRuntimeRunner(manifest, threads=threads)
    runner.activate()
    executor = PlanExecutor(manifest, runner)
    model = load_reference(manifest, threads, "cpu")
    tensor = torch.from_numpy(image)
    cases: dict[str, Callable[[], object]] = {"onnxruntime split": lambda: executor.run(image, "split"),
                                              "torch eager": lambda: model.restore(tensor)}
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
    for round_index in range(rounds + 1):
        for name, run in cases.items():
            faults, begin = _faults(), time.perf_counter()
            run()
            if round_index:
                samples[name].append(((time.perf_counter() - begin) * 1e3, _faults() - faults))
    return {name: {"kept_freed_memory": kept, "median_ms": statistics.median(ms for ms, _ in runs),
                   "median_faults": statistics.median(f for _, f in runs)} for name, runs in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("size", type=int)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.package, args.size, args.rounds, args.threads)))
        return
    print(f"{'allocator':24s} {'case':18s} {'median ms':>10s} {'minor faults/run':>17s}")
    for label, defaults in (("glibc defaults", "1"), ("freed memory kept", "0")):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child"], check=True, capture_output=True,
                             text=True, env={**os.environ, "MOCE_MALLOC_DEFAULTS": defaults})
        for case, numbers in json.loads(out.stdout.strip().splitlines()[-1]).items():
            print(f"{label:24s} {case:18s} {numbers['median_ms']:10.1f} {numbers['median_faults']:17.0f}")


if __name__ == "__main__":
    main()
