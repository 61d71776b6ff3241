"""The package's layers point one way: a module imports only from its own layer or lower ones,
and no two modules import each other, even through a function-level import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "moce"
LAYERS = (
    (
        "base",
        (
            "moce._version",
            "moce.errors",
            "moce._lazy",
            "moce.files",
            "moce.outputs",
            "moce.names",
            "moce.progress",
            "moce.imageio",
            "moce.image_headers",
            "moce.videoio",
            "moce.metrics",
            "moce.data",
        ),
    ),
    ("model", ("moce.model", "moce.routing")),
    ("export", ("moce.export",)),
    ("package", ("moce.package",)),
    ("runtime", ("moce.runtime",)),
    ("engines", ("moce.engines",)),
    ("applications", ("moce.apps", "moce.train")),
    ("api", ("moce",)),  # the package itself: the public names, imported lazily from the applications
    ("cli", ("moce.cli",)),
)


def layer_of(module: str) -> int:
    """Index into :data:`LAYERS` of the longest matching prefix."""
    best, depth = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    if best is None:
        raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``moce`` module ``path`` imports anywhere in it (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "moce"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "moce":
            found.add(node.module)
            for alias in node.names:  # `from moce.apps import bench` imports the module moce.apps.bench
                if (ROOT.parent / node.module.replace(".", "/") / f"{alias.name}.py").is_file():
                    found.add(f"{node.module}.{alias.name}")
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {i} ({LAYERS[layer_of(i)][0]})"
        for m, targets in graph.items()
        for i in sorted(targets)
        if layer_of(i) > layer_of(m)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (package ``__init__`` files excluded: importing a submodule runs them)."""
    edges = {m: {t for t in ts if t in graph and t != m and not m.startswith(t + ".")} for m, ts in graph.items()}
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                found.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_belongs_to_a_layer_and_imports_only_downwards():
    graph = import_graph()
    assert len(graph) > 40
    assert upward_imports(graph) == []


def test_no_module_imports_another_that_imports_it_back():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"moce.model.network": {"moce.runtime.executor"}, "moce.runtime.executor": set()}, 1),
        ({"moce.runtime.executor": {"moce.model.network"}, "moce.model.network": set()}, 0),
    ],
)
def test_an_upward_import_is_caught(graph, expected):
    assert len(upward_imports(graph)) == expected


def test_a_hidden_cycle_is_caught(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from moce.model.network import MoCEIR\n")
    assert imports_of(source) == {"moce.model.network"}
    graph = {"moce.model.network": {"moce.model.layers"}, "moce.model.layers": {"moce.model.network"}}
    assert cycles(graph) == [["moce.model.layers", "moce.model.network", "moce.model.layers"]]
