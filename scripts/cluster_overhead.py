"""What restoring through Ray costs against a local run, on this machine.

    python scripts/cluster_overhead.py [--model PKG_OR_CKPT] [--images 20] [--size 256]

Restores IMAGES random SIZE x SIZE PNGs with ONNX Runtime twice: `moce restore` locally with 2
threads, and `moce restore --cluster local` with 2 workers of 1 thread each (Ray started by the run,
start-up included). Prints both wall times and their ratio, and checks the outputs are identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from moce.apps.cluster import restore_on_cluster
from moce.apps.job import RestoreJob
from moce.apps.restore import restore
from moce.cli.main import configure_process
from moce.data import DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    configure_process()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            cv2.imwrite(str(folder / f"{i:03d}.png"), (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8))
        restore(RestoreJob(folder, Path(tmp) / "warm", args.model, "onnxruntime", threads=2))  # export cached
        start = time.perf_counter()
        restore(RestoreJob(folder, Path(tmp) / "local", args.model, "onnxruntime", threads=2))
        local = time.perf_counter() - start
        start = time.perf_counter()
        restore_on_cluster(RestoreJob(folder, Path(tmp) / "ray", args.model, "onnxruntime", threads=1), "local", 2)
        ray_seconds = time.perf_counter() - start
        same = all((Path(tmp) / "ray" / p.name).read_bytes() == p.read_bytes() for p in (Path(tmp) / "warm").iterdir())
    print(f"{args.images} images {args.size}x{args.size}, ONNX Runtime, model {Path(args.model).name}")
    print(f"local restore, 2 threads:           {local:6.1f} s")
    print(f"Ray, 2 workers x 1 thread (start-up included): {ray_seconds:6.1f} s  (x{ray_seconds / local:.2f})")
    print(f"outputs identical to a local 2-thread run: {same}")


if __name__ == "__main__":
    main()
