"""Where int8 pays on this CPU: ONNX Runtime latency of each trunk segment in float32 against int8
QDQ placements (signed or unsigned activations, 8- or 7-bit weights, depthwise convolutions
quantised or not; ``int8`` and ``int8-cpu`` are the two that `moce build-engine --int8` writes).

Each placement is quantised from the same calibration feeds (the bundled samples at 128 px, as
`moce build-engine --int8` records them) and timed with plain ONNX Runtime sessions, graph by
graph (median of 5 runs after 2 warm-ups) on one image of the bundled samples:

    python scripts/int8_placements.py --model build/S.moce --size 256 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from moce.engines.build import calibration_images
from moce.engines.variants import INT8_PLACEMENTS, calibration_feeds, quantize_int8
from moce.names import CPU_INT8
from moce.package.manifest import load_manifest

SIGNED, CPU = INT8_PLACEMENTS["int8"], INT8_PLACEMENTS[CPU_INT8]
PLACEMENTS = {
    "signed activations, every convolution (int8)": SIGNED,
    "signed activations, depthwise left in fp32": replace(SIGNED, depthwise=False),
    "unsigned activations, 8-bit weights": replace(CPU, reduce_range=False),
    "unsigned activations, 7-bit weights (int8-cpu)": CPU,
    "unsigned, 7-bit weights, depthwise left in fp32": replace(CPU, depthwise=False),
}


def median_ms(path: Path, feeds: dict[str, np.ndarray], threads: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(2):
        session.run(None, feeds)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def time_graph(path: Path, calibration: list[dict], feeds: dict, threads: int, folder: Path) -> dict[str, float]:
    """Milliseconds of graph ``path`` in fp32 and in each placement (quantised into ``folder``)."""
    row = {"fp32": median_ms(path, feeds, threads)}
    for i, (name, placement) in enumerate(PLACEMENTS.items()):
        out = folder / f"{path.stem}.{i}.onnx"
        quantize_int8(path, out, calibration, placement)
        row[name] = median_ms(out, feeds, threads)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("build/S.moce"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    manifest = load_manifest(args.model)
    calibration = calibration_feeds(manifest, calibration_images(None, side=128)[:6])
    timing = calibration_feeds(manifest, calibration_images(None, side=args.size)[:1])
    totals = dict.fromkeys(["fp32", *PLACEMENTS], 0.0)
    with tempfile.TemporaryDirectory(prefix="moce-int8-") as folder:  # the quantised graphs go with it
        for graph in [g for g in manifest.plan_graphs() if g in timing and g.startswith("segment")]:
            path = manifest.graph_file(graph)
            row = time_graph(path, calibration[graph], timing[graph][0], args.threads, Path(folder))
            totals = {k: totals[k] + row[k] for k in totals}
            print(graph, {k: round(v, 1) for k, v in row.items()}, flush=True)
    print(f"\nall trunk segments at {args.size} px, {args.threads} threads:")
    for name, total in totals.items():
        print(f"  {name:<48} {total:8.0f} ms  x{totals['fp32'] / total:.2f} of fp32")


if __name__ == "__main__":
    main()
