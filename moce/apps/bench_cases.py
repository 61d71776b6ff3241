"""What `moce bench` times: its cases (backend, routing form, precision, size, batch), their results,
and how results compare (speed-ups against eager PyTorch, the fastest per size)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moce.runtime.backends import BACKENDS

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
