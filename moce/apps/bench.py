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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from moce._version import __version__
from moce.apps.memory import peak_resident
from moce.apps.session import Session, SessionOptions
from moce.errors import InputError, MoceError
from moce.imageio import write_chart
from moce.metrics import psnr
from moce.outputs import signed
from moce.package.manifest import Manifest
from moce.runtime.allocator import freed_memory_kept, keep_freed_memory
from moce.runtime.backends import BACKENDS, cuda_available, ort_providers
from moce.runtime.executor import PlanExecutor, expert_flops
from moce.runtime.resolve import open_model

SIGNATURE = "moce bench"
"""What bench's JSON results and chart carry: a rerun may replace them and nothing else."""
REFERENCE = "torch-eager"
TORCH_GRAPHS = "torch-graphs"
"""The torch backend replaying CUDA graphs (moce.runtime.cuda_graphs), timed beside the plain one."""
TORCH_COMPILE = "torch-compile"
"""The torch backend with each segment and expert through ``torch.compile`` (inductor)."""
BENCH_BACKENDS = (*BACKENDS, TORCH_GRAPHS, TORCH_COMPILE)
"""What ``--backends`` takes."""


Size = int | tuple[int, int]
"""An image size as ``--sizes`` gives it: a square side, or (height, width)."""


def height_width(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[1])


@dataclass(frozen=True)
class Case:
    backend: str  # torch-eager, torch, onnxruntime, tensorrt
    routing: str
    size: int  # the height (and the width of a square image)
    batch: int
    width: int | None = None  # None: square
    precision: str = "fp32"

    @classmethod
    def of(cls, backend: str, routing: str, size: Size, batch: int, precision: str = "fp32") -> Case:
        height, width = height_width(size)
        return cls(backend, routing, height, batch, None if width == height else width, precision)

    @property
    def shape(self) -> tuple[int, int]:
        return self.size, self.width or self.size

    @property
    def label(self) -> str:
        side = f"{self.size}" if self.width is None else f"{self.size}x{self.width}"
        return f"{self.backend}/{self.routing} {self.precision} {side}px b{self.batch}"


@dataclass
class BenchResult:
    case: Case
    times: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    expert_gflops: float = 0.0
    dense_expert_gflops: float = 0.0
    trunk_gflops: float = 0.0
    gemm_peak_gflops: float | None = None  # float32 matmul rate of the device the case ran on
    cuda: bool = False
    max_abs_vs_reference: float | None = None
    kept_freed_memory: bool = False  # malloc reused freed blocks (moce.runtime.allocator)
    psnr_vs_reference: float | None = None  # dB, outputs clipped to [0, 1] as they are saved
    route_agreement: float | None = None  # share of routing decisions equal to the reference's
    skipped: str | None = None  # why the case did not run

    @property
    def _median_s(self) -> float:
        """The median run time; NaN for a case that did not run."""
        return float(np.median(self.times)) if self.times else float("nan")

    @property
    def median_ms(self) -> float:
        return self._median_s * 1e3

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.times, 90) * 1e3) if self.times else float("nan")

    def images_per_s(self) -> float:
        return self.case.batch / self._median_s

    @property
    def gflops(self) -> float:
        """Work done per run: every trunk segment plus the experts actually run."""
        return self.trunk_gflops + self.expert_gflops

    def gflops_per_s(self) -> float:
        return self.gflops / self._median_s

    def share_of_peak(self) -> float | None:
        return self.gflops_per_s() / self.gemm_peak_gflops if self.gemm_peak_gflops else None


@dataclass
class BenchOptions:
    backends: list[str]
    routings: list[str]
    sizes: list[Size]
    batches: list[int]
    warmup: int = 2
    rounds: int = 10
    threads: int | None = None
    device: str | None = None
    memory: bool = True
    seed: int = 0
    precisions: list[str] = field(default_factory=lambda: ["fp32"])


def backend_of(name: str) -> str:
    """The backend a bench case name runs on (``torch-graphs``: torch with CUDA graphs; ``torch-compile``:
    torch with torch.compile)."""
    return "torch" if name in (TORCH_GRAPHS, TORCH_COMPILE) else name


def expand_cases(options: BenchOptions) -> list[Case]:
    """Every requested combination, plus the eager float32 reference per size/batch; routing forms
    a backend does not run are left out (the table would only repeat the backend's design)."""
    cases = []
    for size in options.sizes:
        for batch in options.batches:
            cases.append(Case.of(REFERENCE, "split", size, batch))
            for backend in options.backends:
                for routing in options.routings:
                    if routing not in BACKENDS[backend_of(backend)].routings:
                        continue
                    cases += [Case.of(backend, routing, size, batch, p) for p in options.precisions]
    return cases


def why_not(case: Case) -> str | None:
    """Why a backend cannot run ``case``'s precision at all, or None."""
    if case.backend == REFERENCE:
        return None
    backend = BACKENDS[backend_of(case.backend)]
    if case.precision in backend.precisions:
        return None
    return f"the {backend.name} backend runs {', '.join(backend.precisions)}"


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


def speedups(results: list[BenchResult]) -> dict[Case, float]:
    ref = {(r.case.shape, r.case.batch): r.median_ms for r in results if r.case.backend == REFERENCE}
    return {r.case: ref[(r.case.shape, r.case.batch)] / r.median_ms for r in results}


def fastest(results: list[BenchResult]) -> dict[tuple[tuple[int, int], int], BenchResult]:
    """Per (size, batch), the quickest case that ran, the reference aside: the path to pick here."""
    best: dict[tuple[tuple[int, int], int], BenchResult] = {}
    for r in results:
        key = (r.case.shape, r.case.batch)
        if r.case.backend != REFERENCE and r.times and (key not in best or r.median_ms < best[key].median_ms):
            best[key] = r
    return best


def _finite(value: float | None) -> float | None:
    """Strict JSON has no NaN or infinity: a skipped case's timings, and the PSNR of an output equal
    to eager's (``max_abs_vs_eager`` 0), are written as null."""
    return value if value is None or np.isfinite(value) else None


def to_json(results: list[BenchResult]) -> list[dict[str, Any]]:
    ups = speedups(results)
    return [
        {
            **asdict(r.case),
            "median_ms": _finite(r.median_ms),
            "p90_ms": _finite(r.p90_ms),
            "images_per_s": _finite(r.images_per_s()),
            "peak_mb": r.peak_mb,
            "expert_gflops": r.expert_gflops,
            "dense_expert_gflops": r.dense_expert_gflops,
            "trunk_gflops": r.trunk_gflops,
            "gflops": r.gflops,
            "gflops_per_s": _finite(r.gflops_per_s()),
            "gemm_peak_gflops": r.gemm_peak_gflops,
            "share_of_gemm_peak": _finite(r.share_of_peak()),
            "speedup_vs_eager": _finite(ups[r.case]),
            "max_abs_vs_eager": r.max_abs_vs_reference,
            "psnr_vs_eager": _finite(r.psnr_vs_reference),
            "route_agreement": r.route_agreement,
            "skipped": r.skipped,
            "cuda": r.cuda,
            "kept_freed_memory": r.kept_freed_memory,
            "times_s": r.times,
        }
        for r in results
    ]


def saved_json(results: list[BenchResult]) -> dict[str, Any]:
    """What ``--json`` writes: the rows of :func:`to_json`, signed as bench's."""
    return signed({"moce": __version__, "results": to_json(results)}, SIGNATURE)


def saved_rows(data: Any) -> list[dict[str, Any]]:
    """The rows of a file ``--json`` wrote (a bare list before moce 0.7.6)."""
    return data["results"] if isinstance(data, dict) else data


def _psnr_of(row: dict[str, Any]) -> float | None:
    """A saved PSNR: null is infinite where the output equalled eager's; runs before 0.7.1 have none."""
    if row.get("psnr_vs_eager") is None and row.get("max_abs_vs_eager") == 0 and "route_agreement" in row:
        return float("inf")
    return row.get("psnr_vs_eager")


def from_json(rows: list[dict[str, Any]]) -> list[BenchResult]:
    """Results back from ``to_json``: a run saved on another machine (a lent GPU, say) tabulated and
    charted here. Derived columns are recomputed from the raw times."""
    return [
        BenchResult(
            Case(r["backend"], r["routing"], r["size"], r["batch"], r.get("width"), r.get("precision", "fp32")),
            times=list(r["times_s"]),
            peak_mb=r["peak_mb"],
            expert_gflops=r["expert_gflops"],
            dense_expert_gflops=r["dense_expert_gflops"],
            trunk_gflops=r["trunk_gflops"],
            gemm_peak_gflops=r["gemm_peak_gflops"],
            cuda=bool(r.get("cuda", False)),
            max_abs_vs_reference=r["max_abs_vs_eager"],
            kept_freed_memory=bool(r.get("kept_freed_memory", False)),  # runs before 0.2.1: glibc defaults
            psnr_vs_reference=_psnr_of(r),
            route_agreement=r.get("route_agreement"),
            skipped=r.get("skipped"),
        )
        for r in rows
    ]


def chart(results: list[BenchResult], path: Path) -> None:
    """Horizontal bars of median latency per case; beside each, the speed-up against eager and the
    accuracy it costs (PSNR against eager fp32, share of identical routes). Skipped cases are left out."""
    import cv2

    ups = speedups(results)
    ran = [r for r in results if r.times]
    row, left, width = 28, 380, 520
    img = np.full((row * len(ran) + 50, left + width + 260, 3), 255, np.uint8)
    worst = max(r.median_ms for r in ran)
    title = "median latency (ms), speed-up vs PyTorch eager fp32, PSNR vs its output / routes the same"
    cv2.putText(img, title, (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    for i, r in enumerate(ran):
        y = 40 + i * row
        colour = (150, 150, 150) if r.case.backend == REFERENCE else (200, 120, 40)
        cv2.putText(img, r.case.label, (10, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        bar = int(width * r.median_ms / worst)
        cv2.rectangle(img, (left, y + 4), (left + bar, y + row - 6), colour, -1)
        accuracy = ""
        if r.case.backend != REFERENCE and r.psnr_vs_reference is not None and r.route_agreement is not None:
            db = f"{r.psnr_vs_reference:.1f} dB" if r.psnr_vs_reference < 99 else "> 99 dB"
            accuracy = f"  {db} / {100 * r.route_agreement:.0f}%"
        label = f"{r.median_ms:.0f} ms  x{ups[r.case]:.2f}{accuracy}"
        cv2.putText(img, label, (left + bar + 6, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    write_chart(path, img, SIGNATURE)


if __name__ == "__main__":
    _child(sys.argv[1])
