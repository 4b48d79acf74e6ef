"""The package's import graph, built from the source with ``ast``: no cycle, and no module
imports a layer above its own (data -> models -> classify, annotate -> deploy -> jobs -> command/API).

Every import counts, at any depth (inside functions too); ``from package import name`` is an
edge to the submodule when ``name`` is one, else to the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "quake"

#: Layers from the bottom up; a module may import its own layer and those below.
LAYERS = [
    {"quake.version", "quake.options", "quake.classes", "quake.processes", "quake.runtime"},
    {"quake.run_folder"},
    {"quake.data"},
    {"quake.probabilities"},
    {"quake.models"},
    {"quake.classify", "quake.annotate"},
    {"quake.deploy"},
    {"quake.training", "quake.pretrain"},
    {"quake.api", "quake.commands", "quake.cli", "quake.__main__", "quake"},
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of module names, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> int:
    for level, roots in enumerate(LAYERS):
        if module in roots or any(module.startswith(root + ".") for root in roots - {"quake"}):
            return level
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # quake/__init__.py imports the API only on attribute access, inside a function
    assert "quake.api" in graph["quake"]


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports of a higher layer: " + "; ".join(upward)


@pytest.mark.parametrize("module", sorted(module_names()))
def test_every_module_has_a_layer(module):
    layer_of(module)
