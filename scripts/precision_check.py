"""Half precision and TF32 on the PyTorch backend: quality against float32, routes, and speed.

    python scripts/precision_check.py [--model CKPT] [--device cuda] [--speed-model CKPT] [--sizes 256:1,512:4]

Quality: the bundled degraded samples restored in float32 (TF32 off), with TF32 on, in fp16 and in
bf16 (moce.model.half); per precision the lowest PSNR against float32 and the share of identical
routes. Speed: median time of the model's forward at each SIZE:BATCH for the same four settings,
on SPEED_MODEL (default: the same model), CUDA events on a GPU. The issue's bar: fp16/bf16 >= 45 dB
with every route identical.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from moce.data import DEFAULT_MODEL, SAMPLES
from moce.imageio import read_image
from moce.metrics import psnr
from moce.model.checkpoint import load_model
from moce.model.half import HALF_DTYPES, half_form

SETTINGS = ("fp32", "tf32", "fp16", "bf16")


def variant(model, setting: str):  # noqa: ANN001, ANN201 - MoCEIR in, MoCEIR out
    return half_form(model, setting) if setting in HALF_DTYPES else model


def run(model, image: torch.Tensor, setting: str):  # noqa: ANN001, ANN201
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = setting == "tf32"
    dtype = HALF_DTYPES.get(setting, torch.float32)
    with torch.inference_mode():
        out, routings = model.restore(image.to(dtype))
    return out.float().clamp(0, 1).cpu().numpy(), [r.experts for r in routings]


def quality(model, device: str) -> None:  # noqa: ANN001
    images = [torch.from_numpy(read_image(p)[0].transpose(2, 0, 1)[None].copy()) for p in sorted(SAMPLES.glob("*.png"))]
    images = [i.to(device) for i in images]
    reference = [run(model, i, "fp32") for i in images]
    print(f"quality on {len(images)} bundled samples, against float32 with TF32 off")
    for setting in SETTINGS[1:]:
        m = variant(model, setting)
        got = [run(m, i, setting) for i in images]
        worst = min(psnr(g[0], r[0]) for g, r in zip(got, reference))
        same = np.mean([all(np.array_equal(a, b) for a, b in zip(g[1], r[1])) for g, r in zip(got, reference)])
        print(f"  {setting}: lowest PSNR {worst:.1f} dB, identical routes {100 * same:.1f}%")


def timed(fn: Callable[[], object], device: str, rounds: int = 10) -> float:
    fn()
    times = []
    for _ in range(rounds):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - begin))
    return statistics.median(times)


def speed(model, device: str, cases: list[tuple[int, int]]) -> None:  # noqa: ANN001
    print("median ms of the forward pass")
    print("  " + " ".join(f"{s:>8}" for s in ("size", "batch", *SETTINGS)))
    for size, batch in cases:
        image = torch.rand(batch, 3, size, size, device=device)
        row = [timed(lambda m=variant(model, s), s=s, x=image: run(m, x, s), device) for s in SETTINGS]
        print("  " + " ".join(f"{v:>8}" for v in (size, batch)) + " " + " ".join(f"{v:>8.1f}" for v in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--speed-model", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="256:1,512:4", help="SIZE:BATCH pairs for the timing")
    args = parser.parse_args()
    model = load_model(args.model)[0].to(args.device)
    quality(model, args.device)
    fast = load_model(args.speed_model)[0].to(args.device) if args.speed_model else model
    speed(fast, args.device, [tuple(int(v) for v in c.split(":")) for c in args.sizes.split(",")])


if __name__ == "__main__":
    main()
