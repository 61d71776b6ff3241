"""``manifest.json``: everything a runtime needs to execute a model package without PyTorch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moce.errors import PackageError
from moce.model.config import MIN_SIDE, MoCEConfig
from moce.model.plan import AdapterStep, SegmentStep, Step

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def segment_graph(index: int) -> str:
    return f"segment{index}"


def tile_segment_graph(index: int) -> str:
    """Segment ``index`` for tiles that share image-wide sums (see moce.model.global_stats)."""
    return f"tile_segment{index}"


def expert_graph(adapter: int, expert: int) -> str:
    return f"adapter{adapter}.expert{expert}"


def parse_expert_graph(name: str) -> tuple[int, int]:
    """Inverse of :func:`expert_graph`: ``adapter3.expert1`` -> ``(3, 1)``."""
    adapter, _, expert = name.partition(".expert")
    return int(adapter.removeprefix("adapter")), int(expert)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Manifest:
    """A parsed manifest plus the folder it lives in."""

    root: Path
    data: dict[str, Any]

    @property
    def config(self) -> MoCEConfig:
        return MoCEConfig.from_dict(self.data["config"])

    @property
    def top_k(self) -> int:
        return int(self.data["config"]["top_k"])

    @property
    def size_multiple(self) -> int:
        return int(self.data["input"]["size_multiple"])

    def graphs(self, precision: str = "fp32") -> dict[str, Any]:
        """The graph entries of ``precision`` (fp32: the exported graphs; others: build-engine's)."""
        if precision == "fp32":
            return self.data["graphs"]
        variants = self.data.get("precisions", {}).get(precision)
        if variants is None:
            raise PackageError(f"{self.root}: no {precision} graphs; run `moce build-engine {self.root} --{precision}`")
        return variants["graphs"]

    def graph_file(self, name: str, precision: str = "fp32") -> Path:
        graphs = self.graphs(precision)
        if name not in graphs:
            raise PackageError(f"{self.root}: no {precision} graph '{name}'")
        return self.root / graphs[name]["file"]

    def has_graph(self, name: str) -> bool:
        return name in self.data["graphs"]

    def has_tile_segments(self) -> bool:
        """Whether the package has the tile segments that share image-wide sums (``--tiles``)."""
        return self.has_graph(tile_segment_graph(0))

    def expert_flops_per_pixel(self) -> list[list[float]]:
        """Per adapter, each expert's FLOPs per pixel (counted once, at export)."""
        return [[e["flops_per_pixel"] for e in s["experts"]] for s in self.data["plan"] if s["kind"] == "adapter"]

    def trunk_flops_per_pixel(self) -> float:
        """All trunk segments' FLOPs per pixel (everything but the experts)."""
        return sum(s["flops_per_pixel"] for s in self.data["plan"] if s["kind"] == "segment")

    @property
    def weights_file(self) -> Path:
        """The package's safetensors weights (for the PyTorch backend and benchmarks)."""
        path = self.root / self.data["weights"]["file"] if "weights" in self.data else None
        if path is None or not path.is_file():
            raise PackageError(f"{self.root}: has no weights.safetensors; the PyTorch paths need one (re-export)")
        return path

    def plan(self) -> list[Step]:
        steps: list[Step] = []
        for item in self.data["plan"]:
            if item["kind"] == "segment":
                steps.append(SegmentStep(item["index"], tuple(item["inputs"]), tuple(item["outputs"])))
            else:
                steps.append(
                    AdapterStep(item["index"], item["level"], item["logits"], tuple(item["inputs"]), item["output"])
                )
        return steps

    def adapter(self, index: int) -> dict[str, Any]:
        return next(s for s in self.data["plan"] if s["kind"] == "adapter" and s["index"] == index)

    def write(self) -> Path:
        path = self.root / MANIFEST
        path.write_text(json.dumps(self.data, indent=2) + "\n")
        return path

    def verify_files(self) -> None:
        """Refuse a package whose graph files are missing or differ from the manifest's hashes."""
        files = dict(self.data["graphs"])
        for precision, variants in self.data.get("precisions", {}).items():
            files.update({f"{precision}:{n}": g for n, g in variants["graphs"].items()})
        if "weights" in self.data:
            files["weights"] = self.data["weights"]
        for name, info in files.items():
            path = self.root / info["file"]
            if not path.is_file():
                raise PackageError(f"{self.root}: graph '{name}' is missing its file {info['file']}")
            if sha256_bytes(path.read_bytes()) != info["sha256"]:
                raise PackageError(f"{path}: does not match the manifest (sha256 differs); re-export the package")


def load_manifest(root: str | Path) -> Manifest:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise PackageError(f"{root}: not a moce package (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path}: invalid JSON ({exc})") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise PackageError(f"{path}: schema_version {data.get('schema_version')!r}, this moce reads {SCHEMA_VERSION}")
    return Manifest(root, data)


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
