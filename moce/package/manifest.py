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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from moce.errors import PackageError, listed
from moce.files import write_bytes_atomic
from moce.model.config import MoCEConfig
from moce.model.plan import AdapterStep, SegmentStep, Step
from moce.names import CPU_INT8, MIN_SIDE, tile_segment_graph
from moce.package.graph_checks import check_signature, external_data, parse_graph, unsafe_path

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]
    dtype: str


@dataclass
class GraphEntry:
    """One ONNX graph of the package: its file (relative to the package), hash and I/O."""

    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    bytes: int
    nodes: int
    stats_size: int | None = None  # tile segments: numbers of image-wide sums each tile reports


@dataclass
class FileEntry:
    file: str
    sha256: str
    format: str = "safetensors"


@dataclass
class ExpertEntry:
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


@dataclass
class Validation:
    """What ``moce export`` recorded of its validation (``"validation"`` in the manifest)."""

    passed: bool
    atol: float
    failures: list[str]
    max_abs_error: dict[str, float]
    cases: list[dict[str, Any]]


@dataclass
class Variant:
    """The graphs of one precision written by ``moce build-engine`` (fp16, int8)."""

    graphs: dict[str, GraphEntry]


@dataclass
class EngineEntry:
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


TYPED = ("schema_version", "config", "opset", "input", "graphs", "weights", "plan", "precisions", "engines")
"""Top-level keys read into typed fields; every other key is kept as written (provenance, notes)."""


@dataclass
class Manifest:
    """A parsed manifest plus the folder it lives in."""

    root: Path
    config_data: dict[str, Any]
    opset: int
    input: dict[str, Any]
    graph_entries: dict[str, GraphEntry]
    plan_entries: list[PlanStep]
    weights: FileEntry | None = None
    precisions: dict[str, Variant] = field(default_factory=dict)
    engines: list[EngineEntry] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    """The other top-level keys (format, created_by, source, output, routing, validation, ...)."""
    key_order: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, root: Path, data: Any) -> Manifest:
        """Parse ``data`` (a decoded manifest.json) with msgspec against the records above; every
        field that fails is named, and all of them are reported in one error."""
        where = root / MANIFEST
        if not isinstance(data, dict):
            raise PackageError(f"{where}: a manifest is a JSON object, this is a {type(data).__name__}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise PackageError(
                f"{where}: schema_version {data.get('schema_version')!r}, this moce reads {SCHEMA_VERSION}; "
                "re-export the package from its checkpoint with `moce export CKPT -o PKG`"
            )
        problems: list[str] = []
        field = lambda kind, name, default=None: _convert(kind, data.get(name, default), name, problems)  # noqa: E731
        precisions = field(dict[str, dict[str, Any]], "precisions", {}) or {}
        manifest = cls(
            root=root,
            config_data=field(dict[str, Any], "config"),
            opset=field(int, "opset"),
            input=field(dict[str, Any], "input"),
            graph_entries=_graph_map(data.get("graphs"), "graphs", problems),
            plan_entries=_plan(data.get("plan"), problems),
            weights=field(FileEntry | None, "weights"),
            precisions={
                p: Variant(_graph_map(v.get("graphs"), f"precisions.{p}.graphs", problems))
                for p, v in precisions.items()
            },
            engines=field(list[EngineEntry], "engines", []) or [],
            info={k: v for k, v in data.items() if k not in TYPED},
            key_order=list(data),
        )
        if not problems:
            problems += manifest.check()
        if problems:
            raise PackageError(f"{where}: malformed manifest: {listed(problems, 5)}")
        return manifest

    def check(self) -> list[str]:
        """Cross-field rules the types alone do not carry (also run on a package the writer builds)."""
        problems = [f"{where}: {why}" for where, entry in self._files() if (why := unsafe_path(entry.file))]
        try:
            MoCEConfig.from_dict(self.config_data)
        except Exception as exc:  # noqa: BLE001 - any malformed config is reported, not raised
            problems.append(f"config: {exc}")
        multiple = self.input.get("size_multiple")
        if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
            problems.append(f"input.size_multiple: expected a positive integer, got {multiple!r}")
        problems += [f"plan: graph {g!r} is not in graphs" for g in self.plan_graphs() if g not in self.graph_entries]
        for e in self.engines:
            known = e.precision == "fp32" or e.precision in self.precisions
            if not known or e.graph not in self.graphs(e.precision):
                problems.append(f"engines: {e.precision} graph {e.graph!r} is not in the package")
        return problems

    def to_dict(self) -> dict[str, Any]:
        typed: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "config": self.config_data,
            "opset": self.opset,
            "input": self.input,
            "graphs": {n: _plain(g) for n, g in self.graph_entries.items()},
            "plan": [_plain(s) for s in self.plan_entries],
        }
        if self.weights:
            typed["weights"] = _plain(self.weights)
        if self.precisions:
            typed["precisions"] = {p: _plain(v) for p, v in self.precisions.items()}
        if self.engines:
            typed["engines"] = [_plain(e) for e in self.engines]
        merged = {**self.info, **typed}
        order = [k for k in self.key_order if k in merged] + [k for k in merged if k not in self.key_order]
        return {k: merged[k] for k in order}

    @property
    def validation(self) -> Validation | None:
        """The export's validation as recorded, or None for a package exported without it."""
        data = self.info.get("validation")
        if data is None:
            return None
        problems: list[str] = []
        validation = _convert(Validation, data, "validation", problems)
        if problems:
            raise PackageError(f"{self.root / MANIFEST}: malformed manifest: {listed(problems, 5)}")
        return validation

    def record_validation(self, validation: Validation) -> None:
        """Record the export's validation (written with the manifest by :meth:`write`)."""
        self.info["validation"] = asdict(validation)

    def routing_form(self, form: str) -> str:
        """What the export recorded of a whole-network routing form: written, or why not."""
        forms = self.info.get("routing", {}).get("forms", {}) if isinstance(self.info.get("routing"), dict) else {}
        note = forms.get(form) if isinstance(forms, dict) else None
        return note if isinstance(note, str) else "not exported"

    @property
    def config(self) -> MoCEConfig:
        return MoCEConfig.from_dict(self.config_data)

    @property
    def top_k(self) -> int:
        return int(self.config_data["top_k"])

    @property
    def size_multiple(self) -> int:
        return int(self.input["size_multiple"])

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


def input_spec(config: MoCEConfig) -> dict[str, Any]:
    return {
        "name": "image",
        "layout": "NCHW",
        "dtype": "float32",
        "channels": config.in_channels,
        "range": [0.0, 1.0],
        "size_multiple": config.size_multiple,
        "min_side": MIN_SIDE,
        "padding": "reflect, bottom/right, cropped back after the network",
    }


def _plain(record: Any) -> Any:
    """A record as JSON data; optional fields left at None are left out."""
    return {k: v for k, v in msgspec.to_builtins(record).items() if v is not None}


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
    path = where + path.rstrip("`")
    missing = re.fullmatch(r"Object missing required field `(.+)`", text)
    if missing:
        return f"{path}.{missing.group(1)}: missing"
    text = text.replace("`", "").replace("got null", "got nothing")
    return f"{path}: {text[:1].lower()}{text[1:]}"


def _graph_map(value: Any, where: str, problems: list[str]) -> dict[str, GraphEntry]:
    """A ``{name: graph}`` object, each entry converted on its own so that errors name the graph."""
    graphs = _convert(dict[str, Any], value, where, problems) or {}
    converted = {name: _convert(GraphEntry, entry, f"{where}.{name}", problems) for name, entry in graphs.items()}
    return {name: entry for name, entry in converted.items() if entry is not None}


def _plan(value: Any, problems: list[str]) -> list[PlanStep]:
    """The plan's steps, each decoded as the record its ``kind`` names (msgspec's tagged union)."""
    return _convert(list[PlanStep], value, "plan", problems) or []
