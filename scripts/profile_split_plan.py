"""Where the split plan spends its time: per graph against eager PyTorch, per ONNX Runtime op, per
convolution kind against the machine's float32 GEMM rate.

    python scripts/profile_split_plan.py build/S.moce 256 [--rounds 6] [--threads 2]

Each round runs the plan once on ONNX Runtime and once on the PyTorch reference (the model's own
segments and experts, eager), in a random order, timing every graph call; the first of the
``--rounds`` is an untimed warm-up. ONNX Runtime's profiler records every kernel of the timed
rounds. A 2048^3 float32 GEMM is timed in every round too, so each convolution kind's GFLOP/s
reads against the fastest thing the CPU does under the same load. Used for the session-9
analysis in docs/performance.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from moce.export.manifest import load_manifest
from moce.runtime.allocator import keep_freed_memory
from moce.runtime.bench import gemm_fn, gflops_of, load_reference
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import GraphRunner, OnnxRuntimeRunner, TorchRunner


def timed_graphs(runner: GraphRunner, times: dict[str, list[float]]) -> None:
    """Record the wall time of every graph call of ``runner`` into ``times[graph]`` (ms)."""
    infer = runner.infer

    def timed(graph: str, feeds: dict) -> dict:
        begin = time.perf_counter()
        out = infer(graph, feeds)
        times[graph].append((time.perf_counter() - begin) * 1e3)
        return out

    runner.infer = timed  # type: ignore[method-assign]


def kernel_events(traces: dict[str, str]) -> Iterator[tuple[str, dict]]:
    """(graph, event) for every kernel run in ONNX Runtime's traces."""
    for graph, trace in traces.items():
        with open(trace) as handle:
            for event in json.load(handle):
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    yield graph, event


def conv_kind(args: dict) -> tuple[str, float]:
    """('3x3 depth-wise @256px', GFLOPs) of one Conv kernel event (2 FLOPs per multiply-add)."""
    data, weight = (next(iter(shape.values())) for shape in args["input_type_shape"][:2])
    out = next(iter(args["output_type_shape"][0].values()))
    kind = "depth-wise" if weight[1] == 1 and data[1] > 1 else "full"
    flops = 2 * np.prod(out) * weight[1] * weight[2] * weight[3]
    return f"{weight[2]}x{weight[3]} {kind:10s} @{out[-1]}px", flops / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("size", type=int)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    keep_freed_memory()  # as `moce bench` does, so the eager times agree with it
    manifest = load_manifest(args.package)
    image = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
    model = load_reference(manifest, args.threads, "cpu")
    trace_dir = tempfile.mkdtemp(prefix="moce_profile_")
    runners = {"onnxruntime": OnnxRuntimeRunner(manifest, threads=args.threads, profile_dir=trace_dir),
               "eager": TorchRunner(model, "cpu")}
    executors = {name: PlanExecutor(manifest, runner) for name, runner in runners.items()}
    times = {name: collections.defaultdict(list) for name in runners}
    totals: dict[str, list[float]] = {name: [] for name in runners}
    gemm, gemm_times = gemm_fn(False, args.threads), []
    order = np.random.default_rng(1)
    for runner in runners.values():
        runner.activate()
    for executor in executors.values():  # warm-up round, untimed (its kernels are skipped below)
        executor.run(image, "split")
    gemm()
    for name, runner in runners.items():
        timed_graphs(runner, times[name])
    for _ in range(args.rounds - 1):
        for name in order.permutation(list(runners)):
            begin = time.perf_counter()
            executors[name].run(image, "split")
            totals[name].append((time.perf_counter() - begin) * 1e3)
        begin = time.perf_counter()
        gemm()
        gemm_times.append(time.perf_counter() - begin)
    report_graphs(times, totals)
    report_kernels(runners["onnxruntime"].end_profiling(), args.rounds, gflops_of(gemm_times))


def report_graphs(times: dict[str, dict[str, list[float]]], totals: dict[str, list[float]]) -> None:
    """Median ms per graph, ONNX Runtime against eager, and the expert / trunk sums."""
    ort, eager = times["onnxruntime"], times["eager"]
    sums = collections.Counter()
    print(f"{'graph':22s} {'onnxruntime':>12s} {'eager':>9s}  speed-up")
    for graph in ort:
        a, b = statistics.median(ort[graph]), statistics.median(eager[graph])
        part = "experts" if graph.startswith("adapter") else "trunk"
        sums[part, "ort"] += a
        sums[part, "eager"] += b
        print(f"{graph:22s} {a:10.1f} ms {b:7.1f} ms  x{b / a:.2f}")
    for part in ("trunk", "experts"):
        a, b = sums[part, "ort"], sums[part, "eager"]
        print(f"{'sum of ' + part:22s} {a:10.1f} ms {b:7.1f} ms  x{b / a:.2f}")
    a, b = statistics.median(totals["onnxruntime"]), statistics.median(totals["eager"])
    print(f"{'whole plan (median)':22s} {a:10.1f} ms {b:7.1f} ms  x{b / a:.2f}\n")


def report_kernels(traces: dict[str, str], rounds: int, gemm_gflops: float) -> None:
    """ONNX Runtime kernel time per op type, and per convolution kind with its GFLOP/s."""
    per_op, per_conv = collections.Counter(), collections.defaultdict(lambda: [0.0, 0.0])
    warm_up_skipped = collections.Counter()
    events = sorted(kernel_events(traces), key=lambda item: item[1]["ts"])
    kernels_of_graph = collections.Counter(graph for graph, _ in events)
    for graph, event in events:
        # every graph runs once per round: its first 1/rounds of kernels belong to the warm-up round
        if warm_up_skipped[graph] < kernels_of_graph[graph] / rounds:
            warm_up_skipped[graph] += 1
            continue
        ms = event["dur"] / 1e3 / (rounds - 1)
        per_op[event["args"]["op_name"]] += ms
        if event["args"]["op_name"] == "Conv":
            kind, gflops = conv_kind(event["args"])
            per_conv[kind][0] += ms
            per_conv[kind][1] += gflops / (rounds - 1)
    total = sum(per_op.values())
    print(f"ONNX Runtime kernel time per run: {total:.1f} ms")
    for op, ms in per_op.most_common(12):
        print(f"  {op:22s} {ms:8.1f} ms {100 * ms / total:5.1f}%")
    print(f"\nconvolutions (float32 GEMM in the same run: {gemm_gflops:.0f} GFLOP/s)")
    for kind, (ms, gflops) in sorted(per_conv.items(), key=lambda item: -item[1][0]):
        print(f"  {kind}  {ms:7.1f} ms  {gflops:6.2f} GFLOP  {gflops / ms * 1e3:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
