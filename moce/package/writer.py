"""Writing a model package: every graph the exporter makes, the weights and the manifest, moved into place whole."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import onnx
import torch

from moce._version import __version__
from moce.errors import ExportError, listed
from moce.export.compose import compose_conditional, compose_dense
from moce.export.graphs import DEFAULT_OPSET, export_expert, export_segment, export_tile_segment, sample_tensor, save
from moce.export.patches import export_form
from moce.model.checkpoint import LoadedCheckpoint, load_model, save_safetensors
from moce.model.complexity import count_flops, expert_costs
from moce.model.config import MoCEConfig
from moce.model.network import MoCEIR
from moce.model.plan import AdapterStep, SegmentStep
from moce.names import (
    CONDITIONAL_GRAPH,
    DENSE_GRAPH,
    EXPERT_INPUTS,
    EXPERT_OUTPUT,
    MIN_SIDE,
    expert_graph,
    segment_graph,
    tile_segment_graph,
)
from moce.package.manifest import (
    MANIFEST,
    AdapterEntry,
    ExpertEntry,
    FileEntry,
    GraphEntry,
    InputSpec,
    Manifest,
    RoutingInfo,
    SegmentEntry,
    TensorSpec,
    sha256_bytes,
)
from moce.progress import Messages

FLOPS_REFERENCE = (256, 256)
WEIGHTS = "weights.safetensors"
DEFAULT_SIZES = ((64, 64), (128, 96))
DEFAULT_BATCHES = (1, 2)
PACKAGE_FORMAT = "moce-onnx-package"
"""What a package's manifest says it is (its ``format`` key)."""
Check = Callable[[Manifest, MoCEIR], Any]
"""Runs on the written package before it is moved into place (validation); its result is returned."""


@dataclass
class ExportOptions:
    opset: int = DEFAULT_OPSET
    conditional: bool = True
    dense: bool = True
    tiles: bool = True
    overwrite: bool = False
    # what validation (moce.runtime.validate) checks after the export
    validate: bool = True
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    batches: tuple[int, ...] = DEFAULT_BATCHES
    atol: float = 1e-4


@dataclass
class ExportResult:
    manifest: Manifest
    report: Any  # what the check returned: a moce.runtime.validate.ValidationReport, or None
    seconds: float

    def graph_rows(self) -> list[dict[str, Any]]:
        return [{"graph": n, **msgspec.structs.asdict(g)} for n, g in self.manifest.graph_entries.items()]


def _graph_entry(file: str, model: onnx.ModelProto, data: bytes) -> GraphEntry:
    def spec(values: Any) -> list[TensorSpec]:
        return [
            TensorSpec(
                v.name,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
            )
            for v in values
        ]

    return GraphEntry(
        file=file,
        sha256=sha256_bytes(data),
        inputs=spec(model.graph.input),
        outputs=spec(model.graph.output),
        bytes=len(data),
        nodes=len(model.graph.node),
    )


def _write_graph(root: Path, graphs: dict[str, GraphEntry], name: str, file: str, model: onnx.ModelProto) -> None:
    data = model.SerializeToString()
    save(model, root / file)
    graphs[name] = _graph_entry(file, model, data)


def _segment_flops(model: MoCEIR, step: SegmentStep) -> int:
    h, w = FLOPS_REFERENCE
    env = {n: sample_tensor(model, n, 1, h, w) for n in step.inputs}
    return count_flops(lambda: model.run_segment(step.index, env))


def _plan_entries(model: MoCEIR, progress: Messages) -> list[SegmentEntry | AdapterEntry]:
    """The plan with graph names, expert descriptions and FLOPs per pixel (counted once, here).

    Counted on the exported forms, which is what the graphs run (the DFT-matrix spectral mixing;
    the strided down-sampling costs more than the model's own).
    """
    model = export_form(model)
    pixels = FLOPS_REFERENCE[0] * FLOPS_REFERENCE[1]
    costs = {(c.adapter, c.expert): c for c in expert_costs(model, *FLOPS_REFERENCE)}
    entries: list[SegmentEntry | AdapterEntry] = []
    for step in model.plan:
        if isinstance(step, SegmentStep):
            progress(f"count FLOPs of segment {step.index}")
            flops = _segment_flops(model, step) / pixels
            entries.append(
                SegmentEntry(step.index, list(step.inputs), list(step.outputs), segment_graph(step.index), flops)
            )
            continue
        assert isinstance(step, AdapterStep)
        experts = [
            ExpertEntry(e, expert_graph(step.index, e), c.rank, c.patch_size, c.params, c.complexity, c.flops / pixels)
            for e in range(model.config.num_experts)
            for c in [costs[(step.index, e)]]
        ]
        entries.append(
            AdapterEntry(
                step.index,
                step.level,
                step.logits,
                list(step.inputs),
                step.output,
                model.config.top_k,
                experts,
            )
        )
    return entries


def input_spec(config: MoCEConfig) -> InputSpec:
    return InputSpec(
        name="image",
        layout="NCHW",
        dtype="float32",
        channels=config.in_channels,
        range=[0.0, 1.0],
        size_multiple=config.size_multiple,
        min_side=MIN_SIDE,
        padding="reflect, bottom/right, cropped back after the network",
    )


def _versions() -> dict[str, str]:
    import onnxruntime

    return {
        "moce": __version__,
        "torch": str(torch.__version__),  # a TorchVersion, a str subclass JSON encoders may not take
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _prepare_output(out_dir: Path, overwrite: bool) -> Path:
    """A staging folder beside ``out_dir``, after refusing to replace what is not moce's to replace:
    a file, or a folder holding anything but a moce package (``--overwrite`` or not)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ExportError(f"{out_dir}: exists and is not a folder; choose another output")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        why = not_a_package(out_dir)
        if why:
            raise ExportError(f"{out_dir}: {why}; moce replaces only a moce package folder, so choose another output")
        if not overwrite:
            raise ExportError(f"{out_dir}: holds a moce package; pass --overwrite to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def not_a_package(folder: Path) -> str | None:
    """Why ``folder`` is not a moce package that may be replaced whole, or None when it is one: its
    manifest names every file in it (a package someone has added files to is not replaced)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())
    try:
        data = json.loads((folder / MANIFEST).read_bytes())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("format") != PACKAGE_FORMAT:
        return f"is not a moce package (it holds {listed(files, 3)})"
    named = {MANIFEST, *_named_files(data)}
    others = [name for name in files if name not in named]
    if others:
        return f"holds files that are not part of its package ({listed(others, 3)})"
    return None


def _named_files(data: Any) -> list[str]:
    """Every ``file`` a manifest names, read leniently (an older or damaged manifest too)."""
    if isinstance(data, dict):
        own = [data["file"]] if isinstance(data.get("file"), str) else []
        return own + [f for value in data.values() for f in _named_files(value)]
    if isinstance(data, list):
        return [f for value in data for f in _named_files(value)]
    return []


def write_package(
    model: MoCEIR, out_dir: Path, source: dict[str, Any], options: ExportOptions, progress: Messages
) -> Manifest:
    """Export every graph into ``out_dir`` (a fresh folder) and write the manifest."""
    config = model.config
    graphs: dict[str, GraphEntry] = {}
    segments, experts = {}, {}
    for step in model.plan:
        if isinstance(step, SegmentStep):
            progress(f"export segment {step.index}")
            segments[step.index] = export_segment(model, step, options.opset)
            _write_graph(
                out_dir, graphs, segment_graph(step.index), f"split/segment{step.index}.onnx", segments[step.index]
            )
            if options.tiles:
                progress(f"export tile segment {step.index}")
                tile_graph, size = export_tile_segment(model, step, options.opset)
                _write_graph(
                    out_dir, graphs, tile_segment_graph(step.index), f"tiles/segment{step.index}.onnx", tile_graph
                )
                graphs[tile_segment_graph(step.index)].stats_size = size
        else:
            for e in range(config.num_experts):
                progress(f"export adapter {step.index} expert {e}")
                experts[(step.index, e)] = export_expert(model, step.index, e, options.opset)
                _write_graph(
                    out_dir,
                    graphs,
                    expert_graph(step.index, e),
                    f"split/adapter{step.index}_expert{e}.onnx",
                    experts[(step.index, e)],
                )
    progress("write weights.safetensors (for the PyTorch backend)")
    save_safetensors(model, out_dir / WEIGHTS)
    plan = list(model.plan)
    notes = {}
    if options.conditional and config.top_k == 1:
        progress("compose conditional graph")
        _write_graph(
            out_dir,
            graphs,
            CONDITIONAL_GRAPH,
            "conditional.onnx",
            compose_conditional(plan, segments, experts, config.in_channels, config.num_experts),
        )
        notes["conditional"] = "one image per call (If branches route the whole batch); top-1 routing"
    elif options.conditional:
        notes["conditional"] = f"not written: the If form supports top-1 routing, this model uses top-{config.top_k}"
    if options.dense:
        progress("compose dense graph")
        _write_graph(
            out_dir,
            graphs,
            DENSE_GRAPH,
            "dense.onnx",
            compose_dense(plan, segments, experts, config.in_channels, config.num_experts, config.top_k),
        )
        notes["dense"] = "runs every expert, weighted by the one-hot top-k gate; any batch size"
    manifest = Manifest(
        root=out_dir,
        config_data=json.loads(json.dumps(config.to_dict())),  # tuples as the JSON lists a reader sees
        opset=options.opset,
        input=input_spec(config),
        graph_entries=graphs,
        plan_entries=_plan_entries(model, progress),
        weights=FileEntry(WEIGHTS, sha256_bytes((out_dir / WEIGHTS).read_bytes()), "safetensors"),
        routing=RoutingInfo(
            rule="softmax of router logits; top-k experts; gate = their probability; ties to the lower index",
            top_k=config.top_k,
            forms=notes,
        ),
        about={
            "format": PACKAGE_FORMAT,
            "created_by": _versions(),
            "source": source,
            "output": {"name": "restored", "note": "not clamped; clamp to [0, 1] before quantising"},
            "expert_interface": {"inputs": list(EXPERT_INPUTS), "output": EXPERT_OUTPUT},
            "flops_reference": {
                "height": FLOPS_REFERENCE[0],
                "width": FLOPS_REFERENCE[1],
                "counted": "convolutions and matrix products, 2 FLOPs per multiply-add",
            },
        },
    )
    problems = manifest.check()
    if problems:
        raise ExportError(f"{out_dir}: the exported manifest breaks its own schema: {'; '.join(problems)}")
    manifest.write()
    return manifest


def export_package(
    checkpoint: str | Path | MoCEIR,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    progress: Messages | None = None,
    check: Check | None = None,
) -> ExportResult:
    """Export every graph of ``checkpoint`` into the package ``out_dir``; ``check`` (validation)
    runs on the written package before it is moved into place.

    The package is assembled in a temporary sibling folder and moved into place whole, so an
    interrupted export, or one whose check raises, never leaves a half-written package behind.
    """
    options = options or ExportOptions()
    progress = progress or (lambda message: None)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if isinstance(checkpoint, MoCEIR):
        model, source = checkpoint.eval(), {"checkpoint": None, "sha256": None}
    else:
        progress(f"load {checkpoint}")
        model, loaded = load_model(checkpoint)
        source = _source(loaded)
    staging = _prepare_output(out_dir, options.overwrite)
    try:
        manifest = write_package(model, staging, source, options, progress)
        report = check(manifest, model) if check else None
        staging.chmod(0o755)
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest.root = out_dir
    return ExportResult(manifest, report, time.perf_counter() - start)


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Put the finished package at ``out_dir``; a package there (checked by :func:`_prepare_output`)
    is moved aside first and deleted only once the new one is in place."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        out_dir.rename(old / out_dir.name)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _source(loaded: LoadedCheckpoint) -> dict[str, Any]:
    return {"checkpoint": loaded.path.name, "sha256": loaded.sha256}
