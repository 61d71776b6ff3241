"""Where int8 pays on this CPU: ONNX Runtime latency of each trunk segment in float32 against int8
QDQ placements (signed or unsigned activations, depthwise convolutions quantised or not).

Each placement is quantised from the same calibration feeds (the bundled samples at 128 px, as
`moce build-engine --int8` records them) and timed with plain ONNX Runtime sessions, graph by
graph (median of 5 runs after 2 warm-ups) on one image of the bundled samples:

    python scripts/int8_placements.py --model build/S.moce --size 256 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

from moce.engines.build import calibration_images
from moce.engines.variants import _Reader, calibration_feeds, output_convs
from moce.package.manifest import load_manifest

SIGNED = {"ActivationSymmetric": True, "WeightSymmetric": True}
PLACEMENTS = {  # name -> (activation type, quantiser options, quantise depthwise convolutions)
    "signed activations, every convolution (shipped)": (QuantType.QInt8, SIGNED, True),
    "signed activations, depthwise left in fp32": (QuantType.QInt8, SIGNED, False),
    "unsigned activations, every convolution": (QuantType.QUInt8, {"WeightSymmetric": True}, True),
    "unsigned activations, depthwise left in fp32": (QuantType.QUInt8, {"WeightSymmetric": True}, False),
}


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    """Grouped convolutions (MoCE-IR's are depthwise)."""
    group = lambda node: next((a.i for a in node.attribute if a.name == "group"), 1)
    return [n.name for n in model.graph.node if n.op_type == "Conv" and group(n) > 1]


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
    model = onnx.load(str(path))
    row = {"fp32": median_ms(path, feeds, threads)}
    for i, (name, (activations, extra, depthwise)) in enumerate(PLACEMENTS.items()):
        out = folder / f"{path.stem}.{i}.onnx"
        quantize_static(
            str(path),
            str(out),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=activations,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Conv"],
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=output_convs(model) + ([] if depthwise else depthwise_convs(model)),
            extra_options=extra,
        )
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
