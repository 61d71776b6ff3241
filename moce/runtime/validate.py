"""Validation of an exported package against PyTorch (after optimum's ``validate_model_outputs``).

ONNX Runtime (CPU) executes the split plan, the conditional graph and the dense graph on random
images at several sizes and batch sizes; names, shapes, values and routes are compared with the
PyTorch model, every failure is collected, and one :class:`ValidationError` reports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from moce.errors import ValidationError
from moce.model.network import MoCEIR
from moce.names import WHOLE_GRAPHS
from moce.package.manifest import Manifest, Validation
from moce.package.writer import DEFAULT_BATCHES, DEFAULT_SIZES, ExportOptions
from moce.runtime.executor import PlanExecutor, PlanResult, TileFeeds
from moce.runtime.runners import OnnxRuntimeRunner

FORBIDDEN_OPS = frozenset({"DFT", "STFT", "Loop", "Scan"})


@dataclass
class ValidationCase:
    mode: str
    batch: int
    height: int
    width: int
    max_abs_error: float
    routes_equal: bool


@dataclass
class ValidationReport:
    cases: list[ValidationCase] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def max_error(self, mode: str | None = None) -> float:
        errors = [c.max_abs_error for c in self.cases if mode is None or c.mode == mode]
        return max(errors, default=float("nan"))

    def raise_if_failed(self) -> None:
        if self.failures:
            raise ValidationError(self.failures)


def check_graph(name: str, model: onnx.ModelProto) -> list[str]:
    """Structural checks: ``onnx.checker``, no DFT/loops, nothing outside the default domain."""
    problems = []
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        problems.append(f"{name}: onnx.checker: {str(exc).splitlines()[0]}")
    for op, domain in ops_in(model.graph):
        if op in FORBIDDEN_OPS:
            problems.append(f"{name}: contains a {op} node")
        if domain not in ("", "ai.onnx"):
            problems.append(f"{name}: op {op} from non-default domain {domain!r}")
    return sorted(set(problems))


def ops_in(graph: onnx.GraphProto) -> Iterable[tuple[str, str]]:
    """Every (op_type, domain) in ``graph``, including ``If`` branches."""
    for node in graph.node:
        yield node.op_type, node.domain
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from ops_in(sub)


def _compare(
    report: ValidationReport, mode: str, image: np.ndarray, got, ref, ref_routes: np.ndarray, atol: float
) -> None:
    b, _, h, w = image.shape
    label = f"{mode} batch {b} {h}x{w}"
    if got.restored.shape != ref.shape:
        report.failures.append(f"{label}: output shape {got.restored.shape}, expected {ref.shape}")
        return
    err = float(np.abs(got.restored - ref).max())
    routes = np.stack([r.experts for r in got.routings], axis=1)
    same = routes.shape == ref_routes.shape and bool(np.array_equal(routes, ref_routes))
    report.cases.append(ValidationCase(mode, b, h, w, err, same))
    if not np.isfinite(err) or err > atol:
        report.failures.append(f"{label}: max abs error {err:.3g} > {atol:g}")
    if not same:
        report.failures.append(f"{label}: routes differ from PyTorch")


def _run_mode(executor: PlanExecutor, image: np.ndarray, mode: str) -> PlanResult:
    """A routing form, or the tile segments on a whole-image "tile": first with their own sums,
    then with those sums imposed; both must give the untiled result."""
    if not mode.startswith("tiles"):
        return executor.run(image, mode)
    whole = TileFeeds(np.ones((image.shape[0], 1, *image.shape[2:]), np.float32))
    local = executor.run(image, "split", tiles=whole)
    if mode == "tiles-local":
        return local
    return executor.run(image, "split", tiles=TileFeeds(whole.core_mask, local.tile_stats))


def validate_package(
    manifest: Manifest,
    model: MoCEIR,
    sizes: Iterable[tuple[int, int]] = DEFAULT_SIZES,
    batches: Iterable[int] = DEFAULT_BATCHES,
    atol: float = 1e-4,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Run every routing form the package holds and compare it with PyTorch."""
    report = ValidationReport()
    for name in manifest.graph_entries:
        report.failures += check_graph(name, onnx.load(str(manifest.graph_file(name)), load_external_data=False))
    modes = ["split"] + [m for m in WHOLE_GRAPHS if manifest.has_graph(m)]
    if manifest.has_tile_segments():
        modes += ["tiles-local", "tiles-imposed"]
    rng = np.random.default_rng(seed)
    with OnnxRuntimeRunner(manifest) as runner:
        executor = PlanExecutor(manifest, runner)
        for height, width in sizes:
            for batch in batches:
                image = rng.random((batch, model.config.in_channels, height, width), dtype=np.float32)
                ref, routings = model.restore(torch.from_numpy(image))
                ref_routes = np.stack([r.experts for r in routings], axis=1)
                for mode in modes:
                    if progress:
                        progress(f"validate {mode} batch {batch} {height}x{width}")
                    try:
                        got = _run_mode(executor, image, mode)
                    except Exception as exc:  # noqa: BLE001 - every failure is collected and reported
                        report.failures.append(f"{mode} batch {batch} {height}x{width}: {type(exc).__name__}: {exc}")
                        continue
                    _compare(report, mode, image, got, ref.numpy(), ref_routes, atol)
    return report


def validation_check(
    options: ExportOptions, progress: Callable[[str], None] | None = None
) -> Callable[[Manifest, MoCEIR], ValidationReport]:
    """The check ``moce export`` runs on a written package: :func:`validate_package` with the export's
    sizes, batches and tolerance, its outcome recorded in the manifest."""

    def check(manifest: Manifest, model: MoCEIR) -> ValidationReport:
        report = validate_package(manifest, model, options.sizes, options.batches, options.atol, progress=progress)
        modes = sorted({c.mode for c in report.cases})
        manifest.record_validation(
            Validation(
                passed=not report.failures,
                atol=options.atol,
                failures=report.failures,
                max_abs_error={m: report.max_error(m) for m in modes},
                cases=[vars(c) for c in report.cases],
            )
        )
        manifest.write()
        return report

    return check
