"""`moce bench`: latency, throughput, memory, expert savings and accuracy per backend, precision,
routing form, size and batch.

All cases are warmed up, then timed in interleaved rounds (every round runs every case once,
in a fresh random order), so machine drift hits all cases alike. The PyTorch eager reference
(the model's own forward on the same weights and threads) is one of the cases, and every
speed-up is against it in the same run. CUDA cases are timed with device events. Peak memory
is measured per case in a child process (peak RSS on CPU, peak allocated on CUDA).
The same run measures the device's float32 matrix-multiply rate, so every case's achieved
GFLOP/s can be read as a share of what the hardware does at best. By default the process keeps
freed memory for reuse (:mod:`moce.runtime.allocator`): with glibc's defaults eager PyTorch pays
for its activations in page faults on every run, by an amount that depends on which cases ran
before, and the speed-ups would measure that instead of the backends.

Every case's output is compared with the eager float32 reference of the same run (PSNR, largest
difference, share of identical routing decisions), so a faster precision is read beside what it
costs. A case the backend or the package cannot run is listed as skipped, with the reason.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from moce.apps.bench_cases import (
    REFERENCE,
    TORCH_COMPILE,
    TORCH_GRAPHS,
    BenchOptions,
    BenchResult,
    Case,
    backend_of,
    expand_cases,
    height_width,
    why_not,
)
from moce.apps.memory import peak_resident
from moce.apps.session import Session
from moce.apps.session_options import SessionOptions
from moce.errors import InputError, MoceError
from moce.metrics import psnr
from moce.package.manifest import Manifest
from moce.runtime.allocator import freed_memory_kept, keep_freed_memory
from moce.runtime.backends import cuda_available, ort_providers
from moce.runtime.executor import PlanExecutor, expert_flops
from moce.runtime.resolve import open_model


class _Timer:
    """Host clock on CPU; CUDA events (with a sync) when the case runs on a GPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3, out
        begin = time.perf_counter()
        out = fn()
        return time.perf_counter() - begin, out


def bench_device(options: BenchOptions) -> str:
    """The one device every case runs on: a speed-up against eager only means something when both
    ran on the same hardware (with CUDA visible, eager on the GPU against ONNX Runtime on the CPU
    would compare two machines)."""
    device = options.device or ("cuda" if cuda_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device: {device!r} is neither cpu nor cuda")
    if device == "cuda" and not cuda_available():
        raise InputError("--device cuda: PyTorch here sees no CUDA GPU")
    if device == "cuda" and "onnxruntime" in options.backends and "CUDAExecutionProvider" not in ort_providers():
        raise InputError(
            "--device cuda: onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu in place of "
            "onnxruntime); time it on the CPU with --device cpu, or leave it out of --backends"
        )
    if device == "cpu" and TORCH_GRAPHS in options.backends:
        raise InputError(f"--device cpu: {TORCH_GRAPHS} replays CUDA graphs, on a CUDA GPU only")
    if device == "cpu" and "tensorrt" in options.backends:
        raise InputError("--device cpu: TensorRT runs on a CUDA GPU only; leave it out of --backends")
    return device


def load_reference(manifest: Manifest, threads: int | None, device: str):  # noqa: ANN201
    """The eager PyTorch model on the package's own weights (the speed-up reference), on ``device``
    (the bench's resolves in :func:`bench_device`)."""
    import torch

    from moce.model.checkpoint import load_model

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_model(manifest.weights_file, top_k=manifest.top_k)
    return model.to(device)


def _make_case_fn(manifest: Manifest, case: Case, options: BenchOptions, image: np.ndarray):  # noqa: ANN202
    """A zero-argument callable running ``case`` once, plus what it needs kept alive. A case the
    package or the backend cannot run raises :class:`MoceError` here, before any timing."""
    if case.backend == REFERENCE:
        import torch

        model = load_reference(manifest, options.threads, options.device)
        tensor = torch.from_numpy(image).to(options.device)
        return (lambda: _eager(model, tensor)), None, options.device == "cuda"
    session = Session(
        manifest,
        SessionOptions(
            backend=backend_of(case.backend),
            device=options.device,
            threads=options.threads,
            cuda_graphs=case.backend == TORCH_GRAPHS,
            compile=case.backend == TORCH_COMPILE,
            routing=case.routing,
            precision=case.precision,
        ),
    )
    session.activate()
    executor, runner = session.restorer.executor, session.choice.runner
    cuda = session.backend == "tensorrt" or str(getattr(runner, "device", "")) == "cuda"
    return (lambda: _plan(executor, image, case.routing)), session, cuda


def _eager(model, tensor):  # noqa: ANN001, ANN202
    out, routings = model.restore(tensor)
    return out.detach().float().cpu().numpy(), routings


def _plan(executor: PlanExecutor, image: np.ndarray, routing: str):  # noqa: ANN202
    result = executor.run(image, routing)
    return result.restored, result.routings


GEMM_SIDE = 2048


def gemm_fn(cuda: bool, threads: int | None) -> Callable[[], Any]:
    """One float32 ``GEMM_SIDE``-cubed matmul (TF32 off) on the CPU threads or the GPU the cases use.

    A dense GEMM is the fastest thing a device does in float32, so its rate bounds any network's.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if cuda else "cpu"
    a, b = (torch.rand(GEMM_SIDE, GEMM_SIDE, device=device) for _ in range(2))
    return lambda: torch.matmul(a, b)


def gflops_of(seconds: list[float]) -> float:
    """The GEMM rate from its median time."""
    return 2 * GEMM_SIDE**3 / float(np.median(seconds)) / 1e9


def bench_images(cases: list[Case], channels: int, seed: int) -> dict[tuple[tuple[int, int], int], np.ndarray]:
    """One random batch per (size, batch), the same whichever backends and routing forms the cases
    list (the routes, and so the expert work, depend on the image)."""
    return {(c.shape, c.batch): bench_image(c, channels, seed) for c in cases}


def bench_image(case: Case, channels: int, seed: int) -> np.ndarray:
    (height, width), batch = case.shape, case.batch
    key = [seed, height, batch] if case.width is None else [seed, height, width, batch]  # squares: as before
    return np.random.default_rng(key).random((batch, channels, height, width), dtype=np.float32)


def run_bench(
    model: str | Path | None, options: BenchOptions, progress: Callable[[str], None] | None = None
) -> list[BenchResult]:
    """Time every case; returns results in case order (reference first for each size/batch)."""
    progress = progress or (lambda message: None)
    options = replace(options, device=bench_device(options))
    kept = freed_memory_kept()  # the program's setting (the moce CLI keeps freed memory; see allocator)
    manifest = open_model(model, progress)
    cases = expand_cases(options)
    images = bench_images(cases, manifest.config.in_channels, options.seed)
    for size in options.sizes:
        if any(side % manifest.size_multiple for side in height_width(size)):
            raise InputError(f"--sizes: {size} is not a multiple of {manifest.size_multiple}")
    results = {c: BenchResult(c, skipped=why_not(c)) for c in cases}
    fns, opened, outputs = {}, [], {}
    try:
        for case in cases:
            if results[case].skipped:
                continue
            progress(f"prepare {case.label}")
            try:
                fn, session, cuda = _make_case_fn(manifest, case, options, images[(case.shape, case.batch)])
            except MoceError as exc:
                results[case].skipped = str(exc)
                continue
            if session is not None:
                opened.append(session)
            timer = _Timer(cuda)
            fns[case] = (fn, timer)
            results[case].cuda = cuda
            for _ in range(options.warmup):
                _, outputs[case] = timer(fn)
        gemm_times = _time_rounds(list(fns), fns, results, outputs, options, progress)
        _record_outputs(manifest, results, outputs, images)
    finally:
        for session in opened:
            session.close()
    for result in results.values():
        result.gemm_peak_gflops = gflops_of(gemm_times[result.cuda])
        result.kept_freed_memory = kept
    if options.memory:
        for case in fns:
            progress(f"peak memory of {case.label}")
            results[case].peak_mb = measure_peak_mb(model or manifest.root, case, options)
    return [results[c] for c in cases]


def _time_rounds(
    cases: list[Case], fns: dict, results: dict, outputs: dict, options: BenchOptions, progress: Callable[[str], None]
) -> dict[bool, list[float]]:
    """Every round runs every case and one float32 GEMM per device, in a fresh random order.

    A case without warm-up runs keeps the output of its first timed run in ``outputs``.

    Timing the GEMM inside the rounds makes "share of peak" compare runs made under the same
    machine load (a shared machine's speed moves by 2x between minutes).
    """
    import torch

    gemms = {cuda: (gemm_fn(cuda, options.threads), _Timer(cuda)) for cuda in {results[c].cuda for c in cases}}
    gemm_times: dict[bool, list[float]] = {cuda: [] for cuda in gemms}
    order: list[Case | bool] = [*cases, *gemms]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # a float32 peak; the caller's setting comes back below
    try:
        for fn, timer in gemms.values():
            timer(fn)  # warm-up
        for r in range(options.rounds):
            random.Random(options.seed + r).shuffle(order)
            progress(f"round {r + 1}/{options.rounds}")
            for item in order:
                if isinstance(item, Case):
                    fn, timer = fns[item]
                    seconds, out = timer(fn)
                    results[item].times.append(seconds)
                    outputs.setdefault(item, out)
                else:
                    fn, timer = gemms[item]
                    gemm_times[item].append(timer(fn)[0])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return gemm_times


def _record_outputs(manifest: Manifest, results: dict, outputs: dict, images: dict) -> None:
    refs = {(c.shape, c.batch): out for c, out in outputs.items() if c.backend == REFERENCE}
    expert_costs, trunk_per_pixel = manifest.expert_flops_per_pixel(), manifest.trunk_flops_per_pixel()
    for case, (restored, routings) in outputs.items():
        pixels = case.shape[0] * case.shape[1]
        run, dense = expert_flops(expert_costs, routings, case.routing == "dense", pixels)
        results[case].expert_gflops, results[case].dense_expert_gflops = run / 1e9, dense / 1e9
        results[case].trunk_gflops = trunk_per_pixel * pixels * case.batch / 1e9
        ref, ref_routings = refs[(case.shape, case.batch)]
        restored = np.asarray(restored, dtype=np.float32)
        results[case].max_abs_vs_reference = float(np.abs(restored - ref).max())
        results[case].psnr_vs_reference = psnr(np.clip(restored, 0, 1), np.clip(ref, 0, 1))
        results[case].route_agreement = route_agreement(routings, ref_routings)


def route_agreement(routings: list, reference: list) -> float:
    """The share of (image, adapter) routing decisions that chose the same experts as ``reference``."""
    same = [np.all(np.asarray(a.experts) == np.asarray(b.experts), axis=1) for a, b in zip(routings, reference)]
    return float(np.mean(np.concatenate(same))) if same else 1.0


def measure_peak_mb(model: str | Path, case: Case, options: BenchOptions) -> float:
    """Peak memory of one warm run of ``case``, in a fresh child process."""
    args = json.dumps(
        {
            "model": str(model),
            "case": asdict(case),
            "threads": options.threads,
            "device": options.device,
            "keep_freed_memory": freed_memory_kept(),
        }
    )
    out = subprocess.run([sys.executable, "-m", "moce.apps.bench", args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


def _child(spec: str) -> None:
    data = json.loads(spec)
    if data["keep_freed_memory"]:  # peak memory under the allocator setting the timings ran with
        keep_freed_memory()
    case = Case(**data["case"])
    options = BenchOptions(
        [case.backend], [case.routing], [case.shape], [case.batch], threads=data["threads"], device=data["device"]
    )
    manifest = open_model(data["model"])
    image = bench_image(case, manifest.config.in_channels, 0)
    fn, runner, cuda = _make_case_fn(manifest, case, options, image)
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    fn()
    if cuda:
        import torch

        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(peak_rss_mb())


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MB."""
    return peak_resident() / 2**20


if __name__ == "__main__":
    _child(sys.argv[1])
