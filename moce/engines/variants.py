"""Writing FP16 and INT8 variants of a package's graphs (runs anywhere, no GPU needed).

INT8 calibration follows the routing: calibration images run through the float32 split plan,
every graph records the inputs it actually received, and each expert is calibrated only on the
samples its router sent to it. Experts that saw fewer than ``min_samples`` get a warning (and,
if they saw none, the adapter's inputs, so that they still carry usable scales).
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import onnx

from moce.engines.precision import convert_fp16
from moce.errors import InputError
from moce.files import write_bytes_atomic
from moce.names import CPU_INT8, DENSE_GRAPH, EXPERT_INPUTS, RESTORED, VARIANT_PRECISIONS, expert_graph, segment_graph
from moce.package.manifest import Manifest, Variant, sha256_bytes
from moce.progress import Messages
from moce.runtime.executor import PlanExecutor
from moce.runtime.runners import GraphRunner, OnnxRuntimeRunner


@dataclass
class VariantReport:
    precision: str  # the manifest's variant: fp16, int8, int8-cpu
    target: str  # what runs it
    graphs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    samples: dict[str, int] = field(default_factory=dict)


class RecordingRunner(GraphRunner):
    """Wraps a runner and keeps a copy of every feed each graph receives (for calibration)."""

    name = "recording"

    def __init__(self, inner: GraphRunner) -> None:
        super().__init__(inner.arrays)
        self.inner = inner
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)

    def activate_impl(self) -> None:
        self.inner.activate()

    def deactivate_impl(self) -> None:
        self.inner.deactivate()

    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds[graph].append({k: np.array(v, copy=True) for k, v in feeds.items()})
        return self.inner.infer(graph, feeds)


def variant_file(manifest: Manifest, key: str, name: str) -> str:
    """Where variant ``key`` of graph ``name`` lies in the package: ``int8/segment0.onnx``."""
    return f"{key}/{Path(manifest.graph_entries[name].file).name}"


def _register(manifest: Manifest, precision: str, name: str, model: onnx.ModelProto) -> None:
    file = variant_file(manifest, precision, name)
    data = model.SerializeToString()
    write_bytes_atomic(manifest.root / file, data)
    entry = msgspec.structs.replace(
        manifest.graph_entries[name], file=file, bytes=len(data), nodes=len(model.graph.node), sha256=sha256_bytes(data)
    )
    manifest.add_variant_graph(precision, name, entry)


def variant_graphs(manifest: Manifest) -> list[str]:
    """Graphs that get precision variants: the split plan and the dense graph.

    Not the If graph, nor the tile segments: their image-wide sums (Gram matrices over up to
    millions of pixels) overflow float16, so tiles share sums only at fp32.
    """
    return manifest.plan_graphs() + [DENSE_GRAPH] * manifest.has_graph(DENSE_GRAPH)


def write_fp16(manifest: Manifest, progress: Messages) -> VariantReport:
    report = VariantReport("fp16", "every graph backend")
    for name in variant_graphs(manifest):
        progress(f"fp16: convert {name}")
        model = convert_fp16(onnx.load(str(manifest.graph_file(name))))
        _register(manifest, "fp16", name, model)
        report.graphs.append(name)
    return report


def calibration_feeds(manifest: Manifest, images: list[np.ndarray], batch: int = 4) -> dict[str, list[dict]]:
    """Inputs every graph sees when the float32 split plan restores ``images`` (NCHW, padded)."""
    recorder = RecordingRunner(OnnxRuntimeRunner(manifest))
    with recorder:
        executor = PlanExecutor(manifest, recorder)
        by_shape: dict[tuple, list[np.ndarray]] = defaultdict(list)
        for image in images:
            by_shape[image.shape].append(image)
        for group in by_shape.values():
            for i in range(0, len(group), batch):
                executor.run(np.stack(group[i : i + batch]), "split")
    return dict(recorder.feeds)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over recorded feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # newer onnxruntime versions may call this
        pass


def output_convs(model: onnx.ModelProto, output: str = RESTORED) -> list[str]:
    """The convolutions that write the restored image (through at most one Add: the residual).

    Kept in float: int8 steps on the final image cost ~15 dB (tiny model: 29 dB with the
    output convolution quantised, 43 dB without it, against float32).
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    names, frontier = [], [output]
    for _ in range(2):
        nodes = [producer[t] for t in frontier if t in producer]
        names += [n.name for n in nodes if n.op_type == "Conv"]
        frontier = [t for n in nodes if n.op_type != "Conv" for t in n.input]
    return names


@dataclass(frozen=True)
class Int8Placement:
    """How convolutions are quantised for one target (options of ONNX Runtime's ``quantize_static``)."""

    target: str  # what runs it
    activations: str  # an ``onnxruntime.quantization.QuantType`` member: QInt8 or QUInt8
    symmetric_activations: bool
    reduce_range: bool  # 7-bit weights
    depthwise: bool = True  # grouped (depthwise) convolutions quantised too


INT8_PLACEMENTS: dict[str, Int8Placement] = {
    # TensorRT's explicit quantisation: signed, symmetric activations on every convolution
    "int8": Int8Placement("TensorRT; ONNX Runtime on GPUs", "QInt8", symmetric_activations=True, reduce_range=False),
    # ONNX Runtime on x86: unsigned activations with a zero point (its u8 x s8 kernels), and 7-bit
    # weights, which keep the pairwise int16 sums of AVX2's VPMADDUBSW from saturating on CPUs
    # without VNNI (MoCE-IR-S, random weights, 256 px: 49.8 dB against fp32, 35.7 dB signed)
    CPU_INT8: Int8Placement("ONNX Runtime on the CPU", "QUInt8", symmetric_activations=False, reduce_range=True),
}


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    """Grouped convolutions (MoCE-IR's are depthwise)."""
    group = lambda node: next((a.i for a in node.attribute if a.name == "group"), 1)  # noqa: E731
    return [n.name for n in model.graph.node if n.op_type == "Conv" and group(n) > 1]


def quantize_int8(
    model_path: Path,
    out_path: Path,
    feeds: list[dict[str, np.ndarray]],
    placement: Int8Placement,
    calibration_cache: Path | None = None,
) -> None:
    """Static QDQ quantisation of convolutions with per-channel symmetric weights, as ``placement``
    says; the convolutions that write the restored image stay in float.

    ``calibration_cache``: a file for the graph's calibrated ranges, written by the first call and
    read by the next (the ranges do not depend on the placement), where this ONNX Runtime's
    quantiser takes one (``calibration_cache_path``); elsewhere each call calibrates again.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(model_path), load_external_data=False)
    kept = output_convs(model) + ([] if placement.depthwise else depthwise_convs(model))
    cache = {}
    if calibration_cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        cache["calibration_cache_path"] = calibration_cache
    quantize_static(
        str(model_path),
        str(out_path),
        _Reader(feeds),
        quant_format=QuantFormat.QDQ,
        activation_type=getattr(QuantType, placement.activations),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=placement.reduce_range,
        op_types_to_quantize=["Conv"],
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=kept,
        extra_options={"ActivationSymmetric": placement.symmetric_activations, "WeightSymmetric": True},
        **cache,
    )


def write_int8(
    manifest: Manifest, images: list[np.ndarray], progress: Messages, min_samples: int = 4
) -> list[VariantReport]:
    """One variant per :data:`INT8_PLACEMENTS` entry, all calibrated on the same recorded inputs."""
    progress(f"int8: record calibration inputs from {len(images)} image(s)")
    feeds = calibration_feeds(manifest, images)
    warnings: list[str] = []
    _fill_unrouted_experts(manifest, feeds, warnings, min_samples)
    if manifest.has_graph(DENSE_GRAPH):
        feeds[DENSE_GRAPH] = list(feeds.get(segment_graph(0), []))
    samples = {name: sum(len(next(iter(f.values()))) for f in feeds[name]) for name in variant_graphs(manifest)}
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, placement in INT8_PLACEMENTS.items():
            report = VariantReport(key, placement.target, warnings=list(warnings), samples=dict(samples))
            for name in variant_graphs(manifest):
                progress(f"{key}: calibrate and quantise {name} ({samples[name]} samples)")
                out = Path(tmp) / f"{key}-{name}.onnx"
                ranges = Path(tmp) / f"{name}.ranges.json"
                quantize_int8(manifest.graph_file(name), out, feeds[name], placement, ranges)
                _register(manifest, key, name, onnx.load(str(out)))
                report.graphs.append(name)
            reports.append(report)
    return reports


def _fill_unrouted_experts(
    manifest: Manifest, feeds: dict[str, list[dict]], warnings: list[str], min_samples: int
) -> None:
    routed = {name: list(batches) for name, batches in feeds.items()}
    for step in manifest.adapters():
        a = step.index
        for e in range(len(step.experts)):
            name = expert_graph(a, e)
            seen = sum(len(f[EXPERT_INPUTS[0]]) for f in feeds.get(name, []))
            if seen < min_samples:
                warnings.append(
                    f"{name}: only {seen} calibration sample(s) were routed to it"
                    + ("; calibrated on all of the adapter's inputs instead" if not seen else "")
                )
            if not seen:
                donors = [f for e2 in range(len(step.experts)) for f in routed.get(expert_graph(a, e2), [])]
                gate = EXPERT_INPUTS[2]
                feeds[name] = [{**f, gate: np.ones_like(f[gate])} for f in donors]


def build_variants(
    manifest: Manifest,
    precisions: list[str],
    calibration: list[np.ndarray] | None = None,
    progress: Messages | None = None,
) -> list[VariantReport]:
    """Write the requested variants into the package and record them in its manifest."""
    progress = progress or (lambda message: None)
    unknown = [p for p in precisions if p not in VARIANT_PRECISIONS]
    if unknown:
        raise InputError(f"unknown precision(s) {unknown}; choose from {', '.join(VARIANT_PRECISIONS)}")
    if "int8" in precisions and not calibration:
        raise InputError("int8 needs calibration images")
    keys = [key for precision in precisions for key in variant_keys(precision)]
    check_variant_paths(manifest, keys)
    earlier = {key: manifest.precisions.pop(key, None) for key in keys}
    reports = []
    for precision in precisions:
        if precision == "fp16":
            reports.append(write_fp16(manifest, progress))
        else:
            reports += write_int8(manifest, calibration or [], progress)
    for key, variant in earlier.items():
        _remove_replaced(manifest, key, variant)
    manifest.write()
    return reports


def variant_keys(precision: str) -> list[str]:
    """The manifest variants one precision of ``moce build-engine`` writes (int8: one per placement)."""
    return [precision] if precision == "fp16" else list(INT8_PLACEMENTS)


def _files_of(variant: Variant | None) -> set[str]:
    return {entry.file for entry in variant.graphs.values()} if variant else set()


def check_variant_paths(manifest: Manifest, keys: list[str]) -> None:
    """Refuse, before any work, to write a variant graph where the package holds a file its manifest
    does not record as that graph (a file moce did not write there is never replaced)."""
    for key in keys:
        ours = _files_of(manifest.precisions.get(key))
        for name in variant_graphs(manifest):
            file = variant_file(manifest, key, name)
            if os.path.lexists(manifest.root / file) and file not in ours:
                raise InputError(
                    f"{manifest.root / file}: exists and the package's manifest does not record it as its "
                    f"{key} graph; move it away to build the variant"
                )


def _remove_replaced(manifest: Manifest, key: str, earlier: Variant | None) -> None:
    """Delete the graphs an earlier build of variant ``key`` recorded and this one did not rewrite
    (a graph the plan no longer has): only plain files in the variant's own folder."""
    for file in _files_of(earlier) - _files_of(manifest.precisions.get(key)):
        path = manifest.root / file
        if path.parent == manifest.root / key and path.is_file() and not path.is_symlink():
            path.unlink()
