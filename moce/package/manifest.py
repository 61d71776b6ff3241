"""``manifest.json``: everything a runtime needs to execute a model package without PyTorch.

The schema is declared once, as the records below: the writer builds them, and the reader
converts the JSON into them with msgspec (strict types; every failing field named); a malformed
manifest is refused with one :class:`PackageError` listing what is wrong, before any work.
The JSON layout is schema version 1; a package of another version is refused with the command
that re-exports it.

Packages are untrusted and sealed: every file the manifest names is a relative path that stays
inside the package folder (no ``..``, no absolute path, no symlink leading out), is covered by a
SHA-256, and graphs keep their weights inside themselves (ONNX external data is refused), all
checked by :meth:`Manifest.verify_files` before any work.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from moce.errors import PackageError, listed
from moce.files import write_bytes_atomic
from moce.model.config import MoCEConfig
from moce.model.plan import AdapterStep, SegmentStep, Step
from moce.names import CPU_INT8, tile_segment_graph
from moce.package.graph_checks import check_signature, external_data, parse_graph, unsafe_path

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TensorSpec(msgspec.Struct):
    name: str
    shape: list[int | str]
    dtype: str


class GraphEntry(msgspec.Struct, omit_defaults=True):
    """One ONNX graph of the package: its file (relative to the package), hash and I/O."""

    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    bytes: int
    nodes: int
    stats_size: int | None = None  # tile segments: numbers of image-wide sums each tile reports


class FileEntry(msgspec.Struct):
    file: str
    sha256: str
    format: str = "safetensors"


class ExpertEntry(msgspec.Struct):
    expert: int
    graph: str
    rank: int
    patch_size: int
    params: int
    complexity: float
    flops_per_pixel: float


class SegmentEntry(msgspec.Struct, tag_field="kind", tag="segment"):
    """A trunk segment of the plan (``"kind": "segment"`` in the manifest)."""

    index: int
    inputs: list[str]
    outputs: list[str]
    graph: str
    flops_per_pixel: float


class AdapterEntry(msgspec.Struct, tag_field="kind", tag="adapter"):
    """An adapter of the plan (``"kind": "adapter"``): its router's logits and its experts' graphs."""

    index: int
    level: int
    logits: str
    inputs: list[str]
    output: str
    top_k: int
    experts: list[ExpertEntry]


PlanStep = SegmentEntry | AdapterEntry
"""One step of the plan: a tagged union, decoded by its ``kind``."""


class Validation(msgspec.Struct):
    """What ``moce export`` recorded of its validation (``"validation"`` in the manifest)."""

    passed: bool
    atol: float
    failures: list[str]
    max_abs_error: dict[str, float]
    cases: list[dict[str, Any]]


class Variant(msgspec.Struct):
    """The graphs of one precision written by ``moce build-engine`` (fp16, int8)."""

    graphs: dict[str, GraphEntry]


class EngineEntry(msgspec.Struct):
    """A TensorRT engine of one graph and precision: its file, hash, and what it was built from and for."""

    graph: str
    precision: str
    file: str
    sha256: str
    graph_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    profile: list[list[int]]  # min, opt, max image shapes (batch, height, width)
    digest: str  # the engine cache's key


class InputSpec(msgspec.Struct):
    """What every graph's ``image`` input takes, and how an image is padded to fit."""

    name: str
    layout: str
    dtype: str
    channels: int
    range: list[float]
    size_multiple: int
    min_side: int
    padding: str


class RoutingInfo(msgspec.Struct):
    """How experts are chosen, and what the export wrote of each whole-network form (or why not)."""

    rule: str
    top_k: int
    forms: dict[str, str] = {}


class ManifestFile(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``manifest.json``'s top level, declared once: every key, its type, and (by the order here) the
    order the file lays them out in. Descriptive keys are optional; the rest must be there."""

    schema_version: int
    format: str | None = None
    created_by: dict[str, str] | None = None
    source: dict[str, Any] | None = None
    config: dict[str, Any]
    opset: int
    input: InputSpec
    output: dict[str, Any] | None = None
    routing: RoutingInfo | None = None
    expert_interface: dict[str, Any] | None = None
    graphs: dict[str, GraphEntry]
    weights: FileEntry | None = None
    plan: list[PlanStep]
    flops_reference: dict[str, Any] | None = None
    validation: Validation | None = None
    precisions: dict[str, Variant] = {}
    engines: list[EngineEntry] = []


RECORD_FIELDS = {
    **{"config_data": "config", "graph_entries": "graphs", "plan_entries": "plan"},
    **{name: name for name in ("opset", "input", "weights", "precisions", "engines", "routing", "validation")},
}
""":class:`Manifest`'s attributes and the :class:`ManifestFile` keys they are read from and written to."""

ABOUT = ("format", "created_by", "source", "output", "expert_interface", "flops_reference")
"""The keys that describe a package (provenance, notes) and that no code reads."""


@dataclass
class Manifest:
    """A parsed manifest plus the folder it lives in (its file's layout: :class:`ManifestFile`)."""

    root: Path
    config_data: dict[str, Any]
    opset: int
    input: InputSpec
    graph_entries: dict[str, GraphEntry]
    plan_entries: list[PlanStep]
    weights: FileEntry | None = None
    precisions: dict[str, Variant] = field(default_factory=dict)
    engines: list[EngineEntry] = field(default_factory=list)
    routing: RoutingInfo | None = None
    validation: Validation | None = None  # what ``moce export`` recorded of its validation
    about: dict[str, Any] = field(default_factory=dict)
    """The descriptive keys (:data:`ABOUT`: provenance and notes), kept as written."""

    @classmethod
    def from_dict(cls, root: Path, data: Any) -> Manifest:
        """Parse ``data`` (a decoded manifest.json) with msgspec against :class:`ManifestFile`; the
        field that fails is named by its path (``graphs.segment0.sha256: expected str, got int``)."""
        where = root / MANIFEST
        if not isinstance(data, dict):
            raise PackageError(f"{where}: a manifest is a JSON object, this is a {type(data).__name__}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise PackageError(
                f"{where}: schema_version {data.get('schema_version')!r}, this moce reads {SCHEMA_VERSION}; "
                "re-export the package from its checkpoint with `moce export CKPT -o PKG`"
            )
        problems: list[str] = []
        record = _convert(ManifestFile, data, "", problems)
        if record is None and "[...]" in problems[0]:  # msgspec writes a map's keys as [...]: name the graph
            problems = _named_graph_errors(data) or problems
        if record is not None:
            manifest = cls.from_record(root, record)
            problems += manifest.check()
        if problems:
            raise PackageError(f"{where}: malformed manifest: {listed(problems, 5)}")
        return manifest

    @classmethod
    def from_record(cls, root: Path, record: ManifestFile) -> Manifest:
        about = {k: getattr(record, k) for k in ABOUT if getattr(record, k) is not None}
        return cls(root=root, about=about, **{attr: getattr(record, key) for attr, key in RECORD_FIELDS.items()})

    def check(self) -> list[str]:
        """Cross-field rules the types alone do not carry (also run on a package the writer builds)."""
        problems = [f"{where}: {why}" for where, entry in self._files() if (why := unsafe_path(entry.file))]
        try:
            MoCEConfig.from_dict(self.config_data)
        except Exception as exc:  # noqa: BLE001 - any malformed config is reported, not raised
            problems.append(f"config: {exc}")
        if self.input.size_multiple < 1:
            problems.append(f"input.size_multiple: expected a positive integer, got {self.input.size_multiple!r}")
        problems += [f"plan: graph {g!r} is not in graphs" for g in self.plan_graphs() if g not in self.graph_entries]
        for e in self.engines:
            known = e.precision == "fp32" or e.precision in self.precisions
            if not known or e.graph not in self.graphs(e.precision):
                problems.append(f"engines: {e.precision} graph {e.graph!r} is not in the package")
        return problems

    def to_record(self) -> ManifestFile:
        fields = {key: getattr(self, attr) for attr, key in RECORD_FIELDS.items()}
        return ManifestFile(schema_version=SCHEMA_VERSION, **fields, **self.about)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON data, laid out as :class:`ManifestFile` declares it."""
        return msgspec.to_builtins(self.to_record())

    def record_validation(self, validation: Validation) -> None:
        """Record the export's validation (written with the manifest by :meth:`write`)."""
        self.validation = validation

    def routing_form(self, form: str) -> str:
        """What the export recorded of a whole-network routing form: written, or why not."""
        note = self.routing.forms.get(form) if self.routing is not None else None
        return note or "not exported"

    @property
    def config(self) -> MoCEConfig:
        return MoCEConfig.from_dict(self.config_data)

    @property
    def top_k(self) -> int:
        return int(self.config_data["top_k"])

    @property
    def size_multiple(self) -> int:
        return self.input.size_multiple

    def graphs(self, precision: str = "fp32") -> dict[str, GraphEntry]:
        """The graph entries of ``precision`` (fp32: the exported graphs; others: build-engine's)."""
        if precision == "fp32":
            return self.graph_entries
        variant = self.precisions.get(precision)
        if variant is None:
            raise PackageError(f"{self.root}: no {precision} graphs; run `moce build-engine {self.root} --{precision}`")
        return variant.graphs

    def variant_for(self, precision: str, cpu: bool) -> str:
        """The graphs a runner reads for ``precision``: on the CPU, int8 from the placement made
        for it (:data:`CPU_INT8`) where the package has one; packages built before it have not."""
        return CPU_INT8 if cpu and precision == "int8" and CPU_INT8 in self.precisions else precision

    def graph_file(self, name: str, precision: str = "fp32") -> Path:
        graphs = self.graphs(precision)
        if name not in graphs:
            raise PackageError(f"{self.root}: no {precision} graph '{name}'")
        return self.root / graphs[name].file

    def has_graph(self, name: str) -> bool:
        return name in self.graph_entries

    def has_tile_segments(self) -> bool:
        """Whether the package has the tile segments that share image-wide sums (``--tiles``)."""
        return self.has_graph(tile_segment_graph(0))

    def plan_graphs(self) -> list[str]:
        """The split plan's graphs in plan order: each segment, then each of an adapter's experts."""
        names = []
        for step in self.plan_entries:
            names += [step.graph] if isinstance(step, SegmentEntry) else [e.graph for e in step.experts]
        return names

    def engines_of(self, precision: str) -> dict[str, EngineEntry]:
        """The TensorRT engines recorded for ``precision``, by graph name."""
        return {e.graph: e for e in self.engines if e.precision == precision}

    def set_engines(self, precision: str, entries: list[EngineEntry]) -> None:
        """Replace the engines recorded for ``precision``; :meth:`write` saves them."""
        self.engines = [e for e in self.engines if e.precision != precision] + entries

    def adapters(self) -> list[AdapterEntry]:
        return [s for s in self.plan_entries if isinstance(s, AdapterEntry)]

    def expert_flops_per_pixel(self) -> list[list[float]]:
        """Per adapter, each expert's FLOPs per pixel (counted once, at export)."""
        return [[e.flops_per_pixel for e in a.experts] for a in self.adapters()]

    def trunk_flops_per_pixel(self) -> float:
        """All trunk segments' FLOPs per pixel (everything but the experts)."""
        return sum(s.flops_per_pixel for s in self.plan_entries if isinstance(s, SegmentEntry))

    @property
    def weights_file(self) -> Path:
        """The package's safetensors weights (for the PyTorch backend and benchmarks)."""
        path = self.root / self.weights.file if self.weights else None
        if path is None or not path.is_file():
            raise PackageError(f"{self.root}: has no weights.safetensors; the PyTorch paths need one (re-export)")
        return path

    def plan(self) -> list[Step]:
        steps: list[Step] = []
        for s in self.plan_entries:
            if isinstance(s, SegmentEntry):
                steps.append(SegmentStep(s.index, tuple(s.inputs), tuple(s.outputs)))
            else:
                steps.append(AdapterStep(s.index, s.level, s.logits, tuple(s.inputs), s.output))
        return steps

    def add_variant_graph(self, precision: str, name: str, entry: GraphEntry) -> None:
        """Record graph ``name`` of ``precision`` (the precision step); :meth:`write` saves it."""
        self.precisions.setdefault(precision, Variant({})).graphs[name] = entry

    def write(self) -> Path:
        path = self.root / MANIFEST
        write_bytes_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path

    def _files(self) -> Iterator[tuple[str, GraphEntry | FileEntry | EngineEntry]]:
        """Every file the manifest names, with where in the manifest it is named."""
        yield from ((f"graphs.{n}.file", g) for n, g in self.graph_entries.items())
        for precision, variant in self.precisions.items():
            yield from ((f"precisions.{precision}.graphs.{n}.file", g) for n, g in variant.graphs.items())
        if self.weights:
            yield "weights.file", self.weights
        yield from ((f"engines[{i}].file", e) for i, e in enumerate(self.engines))

    def file_names(self) -> list[str]:
        """Every file the manifest names, relative to the package folder."""
        return [info.file for _, info in self._files()]

    def verify_files(self) -> None:
        """Refuse, before any work, a package whose files are missing, lead outside the package
        folder, differ from the manifest's hashes, or (graphs) read weights from outside themselves."""
        inside = self.root.resolve()
        for where, info in self._files():
            path = self.root / info.file
            if not path.resolve().is_relative_to(inside):
                raise PackageError(f"{path}: leads outside the package (a symlink?); refused ({where})")
            if not path.is_file():
                raise PackageError(f"{self.root}: {where} names {info.file}, which is missing or not a file")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PackageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
            if sha256_bytes(data) != info.sha256:
                raise PackageError(f"{path}: does not match the manifest (sha256 differs); re-export the package")
            if not isinstance(info, GraphEntry):
                continue
            graph = parse_graph(path, data)
            check_signature(path, graph, ([s.name for s in info.inputs], [s.name for s in info.outputs]))
            if external := external_data(graph):
                raise PackageError(
                    f"{path}: reads weights from external data ({external}); moce packages keep weights "
                    "inside each graph, so nothing outside the hashed files is loaded: re-export the package"
                )


def load_manifest(root: str | Path) -> Manifest:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise PackageError(f"{root}: not a moce package (no {MANIFEST})")
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise PackageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PackageError(f"{path}: invalid JSON ({str(exc).splitlines()[0][:200]})") from None
    return Manifest.from_dict(root, data)


def _convert(kind: Any, value: Any, where: str, problems: list[str]) -> Any:
    """``value`` as ``kind`` (msgspec, strict: no bool for int, no string for a number); a mismatch is
    appended to ``problems`` as ``field.path: what``, and None stands in for the value."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        problems.append(_field_error(where, str(exc)))
        return None


def _field_error(where: str, message: str) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.plan[0].index``` as ``plan[0].index: expected int, got str``."""
    text, _, path = message.partition(" - at `$")
    path = (where + path.rstrip("`")).lstrip(".")
    missing = re.fullmatch(r"Object missing required field `(.+)`", text)
    if missing:
        return f"{path}.{missing.group(1)}: missing".lstrip(".")
    text = text.replace("`", "").replace("got null", "got nothing")
    return f"{path}: {text[:1].lower()}{text[1:]}"


def _named_graph_errors(data: dict[str, Any]) -> list[str]:
    """Each graph entry converted on its own (``graphs`` and every variant's), so that an error names
    the graph (``graphs.segment0.sha256: missing``), which msgspec's path for a map does not; only
    once the whole record has failed, so a good manifest is converted once."""
    maps = [("graphs", data.get("graphs"))]
    precisions = data.get("precisions")
    if isinstance(precisions, dict):
        maps += [(f"precisions.{p}.graphs", v.get("graphs")) for p, v in precisions.items() if isinstance(v, dict)]
    problems: list[str] = []
    for where, graphs in maps:
        for name, entry in graphs.items() if isinstance(graphs, dict) else ():
            _convert(GraphEntry, entry, f"{where}.{name}", problems)
    return problems
