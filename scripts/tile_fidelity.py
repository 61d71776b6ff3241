"""How close tiled restoration comes to untiled, per number of tile passes.

    python scripts/tile_fidelity.py --model moce/data/moce_demo.ckpt --size 1024 --tile 256 \
        --overlap 32 --passes 1,2,3 --degradations noise25,rain,haze,blur,lowlight

Restores one bundled sample photo (upscaled to --size, then degraded) untiled and tiled with
``--route-per image`` on ONNX Runtime, and prints PSNR and max abs difference between the two.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from moce.data.degrade import degrade
from moce.metrics import psnr
from moce.runtime.executor import PlanExecutor
from moce.runtime.resolve import open_model
from moce.runtime.restorer import RestoreOptions, Restorer
from moce.runtime.runners import OnnxRuntimeRunner

SAMPLE = Path(__file__).resolve().parents[1] / "moce" / "data" / "samples" / "clean"


def _photo(size: int) -> np.ndarray:
    path = sorted(SAMPLE.glob("*.png"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(np.clip(a, 0, 1), np.clip(b, 0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="moce/data/moce_demo.ckpt")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--passes", default="1,2,3")
    parser.add_argument("--degradations", default="noise25,rain,haze,blur,lowlight")
    args = parser.parse_args()
    manifest = open_model(args.model, print)
    clean = _photo(args.size)
    print(f"{'degradation':<12} {'passes':>6} {'PSNR dB':>8} {'max abs':>8} {'seconds':>8}  (untiled seconds)")
    with OnnxRuntimeRunner(manifest) as runner:
        executor = PlanExecutor(manifest, runner)
        for name in args.degradations.split(","):
            image = degrade(clean, name, 0).astype(np.float32)
            start = time.perf_counter()
            full = Restorer(executor, RestoreOptions(tile=args.size)).restore_batch([image])[0]
            untiled = time.perf_counter() - start
            for passes in (int(p) for p in args.passes.split(",")):
                options = RestoreOptions(tile=args.tile, overlap=args.overlap, batch=4, tile_passes=passes)
                start = time.perf_counter()
                tiled = Restorer(executor, options).restore_tiled(image)
                seconds = time.perf_counter() - start
                diff = float(np.abs(np.clip(full.restored, 0, 1) - np.clip(tiled.restored, 0, 1)).max())
                print(
                    f"{name:<12} {passes:>6} {_psnr(full.restored, tiled.restored):>8.2f} {diff:>8.4f} "
                    f"{seconds:>8.1f}  ({untiled:.1f})"
                )


if __name__ == "__main__":
    main()
