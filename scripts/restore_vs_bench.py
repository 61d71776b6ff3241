"""Does `moce restore` get the speed `moce bench` reports? Both measured in one process, side by side.

    python scripts/restore_vs_bench.py --model build/S.moce --size 512 --images 5 --rounds 3

The process is set up as the `moce` command sets it up (configure_process: the allocator keeps freed
memory). For each backend, `moce bench`'s median for the split plan at SIZE x SIZE, batch 1, is
printed beside the per-image median of `moce restore` over IMAGES random PNG files of that size
(the first image, which opens the backend's sessions, left out), and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from moce.apps.bench import run_bench
from moce.apps.bench_cases import BenchOptions
from moce.apps.job import RestoreJob
from moce.apps.restore import restore
from moce.cli.main import configure_process


def restore_seconds(model: str, backend: str, size: int, images: int, threads: int | None) -> list[float]:
    """Per-image seconds of one `moce restore` run over ``images`` random PNGs, the first left out."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i in range(images):
            cv2.imwrite(str(folder / f"{i:02d}.png"), (rng.random((size, size, 3)) * 255).astype(np.uint8))
        summary = restore(RestoreJob(folder, Path(tmp) / "out", model, backend, "cpu", threads=threads))
    return [r.seconds for r in sorted(summary.restored, key=lambda r: r.input)][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backends", default="onnxruntime,torch")
    args = parser.parse_args()
    configure_process()
    backends = args.backends.split(",")
    options = BenchOptions(backends, ["split"], [args.size], [1], 1, args.rounds, args.threads, "cpu", False)
    bench = {r.case.backend: r.median_ms / 1000 for r in run_bench(args.model, options)}
    print(f"{'backend':<12} {'bench median s':>15} {'restore median s':>17} {'restore / bench':>16}")
    for backend in backends:
        seconds = restore_seconds(args.model, backend, args.size, args.images, args.threads)
        median = float(np.median(seconds))
        print(f"{backend:<12} {bench[backend]:>15.2f} {median:>17.2f} {median / bench[backend]:>16.2f}")
    print(f"{'torch-eager':<12} {bench['torch-eager']:>15.2f}   (the reference; restore runs the torch backend)")


if __name__ == "__main__":
    main()
