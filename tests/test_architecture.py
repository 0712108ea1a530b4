"""The package's shape: every import points down a fixed order of layers, no module imports
itself back through others (not even under TYPE_CHECKING), and no module outgrows a reader."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "checkpoint_flow"
MAX_LINES = 500

# Lowest first. A module may import its own layer and the layers before it, never after.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "checks", "policy", "httpguard")),
    ("storage", ("storage",)),
    ("identity", ("identity",)),
    ("engine", ()),  # every top-level module not named elsewhere
    ("extensions", ("memo", "fanout", "training")),
    ("public class", ("flow",)),
    ("front", ("__init__", "__main__", "cli", "flow_commands", "ui", "demo")),
    ("0.1 import paths", ("retention", "triggers")),
]
# Extensions stand side by side: none of them is built on another.
EXTENSIONS = ("memo", "fanout", "training")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports, TYPE_CHECKING and function-local imports too."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package and name != "__init__" else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                child = f"{module}.{alias.name}" if module else alias.name
                targets.add(child if child in MODULES else (module or "__init__"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            absolute = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""
            ]
            for full in absolute:
                if full.startswith("checkpoint_flow."):
                    targets.add(full.removeprefix("checkpoint_flow."))
                elif full == "checkpoint_flow":
                    targets.add("__init__")
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for index, (_title, names) in enumerate(LAYERS):
        if top in names:
            return index
    return next(i for i, (title, _) in enumerate(LAYERS) if title == "engine")


def test_every_import_points_down_the_layers() -> None:
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_extensions_do_not_build_on_each_other() -> None:
    crossing = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if module.split(".")[0] in EXTENSIONS
        and target.split(".")[0] in EXTENSIONS
        and target.split(".")[0] != module.split(".")[0]
    ]
    assert crossing == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle() -> None:
    assert _cycles(GRAPH) == []


def test_the_circle_check_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_outgrows_a_reader(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by concept"
