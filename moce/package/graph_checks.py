"""What every file a manifest names must pass before it is used: a plain relative path inside the
package, and (graphs) readable ONNX with the recorded inputs and outputs and no external data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import onnx

from moce.errors import PackageError


def unsafe_path(file: str) -> str | None:
    """Why ``file`` may not be named by a manifest (absolute, ``..``, empty), or None when it is a
    plain relative path inside the package."""
    parts = PurePosixPath(file).parts
    if not file or "\\" in file or "\0" in file:
        return f"{file!r} is not a plain relative path"
    if PurePosixPath(file).is_absolute():
        return f"{file!r} is an absolute path; files must lie inside the package"
    if ".." in parts:
        return f"{file!r} leads outside the package"
    return None


def parse_graph(path: Path, data: bytes) -> onnx.GraphProto:
    """The ONNX graph in ``data``, parsed once for every check :meth:`Manifest.verify_files` makes."""
    try:
        return onnx.load_from_string(data).graph
    except Exception as exc:  # noqa: BLE001 - a hostile file can fail the parser anyhow
        raise PackageError(f"{path}: not a readable ONNX graph ({type(exc).__name__})") from None


def check_signature(path: Path, graph: onnx.GraphProto, expected: tuple[list[str], list[str]]) -> None:
    """Refuse a graph whose inputs and outputs are not the ones the manifest records for it (a graph
    swapped for another, with the manifest re-hashed, would fail on every image instead)."""
    found = ([i.name for i in graph.input], [o.name for o in graph.output])
    if found != expected:
        raise PackageError(
            f"{path}: takes {', '.join(found[0])} and gives {', '.join(found[1])}, but the manifest says "
            f"{', '.join(expected[0])} and {', '.join(expected[1])}; re-export the package"
        )


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in ``graph``: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    yield from (s.values for s in graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            yield from [attr.t] if attr.HasField("t") else attr.tensors
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _tensors(sub)


def external_data(graph: onnx.GraphProto) -> str | None:
    """The location of the first tensor of ``graph`` kept in external data, if any."""
    for tensor in _tensors(graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            location = {e.key: e.value for e in tensor.external_data}.get("location", "?")
            return f"tensor '{tensor.name}' in {location!r}"
    return None
