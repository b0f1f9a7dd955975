"""The package's import graph (worldsim, with worldsim.controllers and worldsim.kernels from the
repository's controllers/ and kernels/) has no cycle, and the model is pure.

Read with `ast`, not by importing: every module-level import statement (inside module-level `if`/
`try`/`with` blocks and class bodies too, not inside functions, not under `if TYPE_CHECKING:`), relative
imports resolved. `from a.b import c` is an edge to module `a.b.c` when that is a module, else to `a.b`.
The same graph with the imports inside functions added must have no cycle either: a function-level
import is for a heavy optional dependency, never a way around a cycle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder in the repository -> the package it installs as (pyproject.toml: package-dir)
PACKAGES = {"worldsim": "worldsim", "controllers": "worldsim.controllers", "kernels": "worldsim.kernels"}


def modules() -> dict[str, Path]:
    """Module name -> file, for every .py file of the packages."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _top_level_imports(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _top_level_imports(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _top_level_imports(node.body)


def _every_import(body: list[ast.stmt]):
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def import_graph(*, inside_functions: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (and inside functions too)."""
    read = _every_import if inside_functions else _top_level_imports
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in read(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import a.b.c` of a non-module name: its module
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_reader_sees_the_packages_and_would_name_a_cycle():
    graph = import_graph()
    assert {
        "worldsim.neural",
        "worldsim.frame",
        "worldsim.controllers.window",
        "worldsim.kernels.common",
    } <= set(graph)
    assert "worldsim.frame" in graph["worldsim.neural"]
    assert (
        "worldsim.kernels.ring_attention" not in graph["worldsim.engine.attention"]
    )  # imported in a function
    assert (
        "worldsim.kernels.ring_attention" in import_graph(inside_functions=True)["worldsim.engine.attention"]
    )
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("inside_functions", [False, True], ids=["module-level", "with-functions"])
def test_no_import_cycle(inside_functions):
    cycle = find_cycle(import_graph(inside_functions=inside_functions))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_imports_the_folders_by_their_bare_names():
    """`kernels` and `controllers` are installed as worldsim.kernels / worldsim.controllers: a bare
    `import kernels` would find another distribution's package (PyPI has one) or nothing."""
    for name, path in modules().items():
        for node in _every_import(ast.parse(path.read_text(), str(path)).body):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bare = [
                n
                for n in names
                if not node_is_relative(node) and n.split(".")[0] in ("kernels", "controllers")
            ]
            assert not bare, f"{name} imports {bare}: import worldsim.{bare[0]}"


def node_is_relative(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.level > 0


def test_the_model_is_pure():
    """worldsim/model/ imports nothing of the engine, the kernels or the worlds built on it (anywhere)."""
    graph = import_graph(inside_functions=True)
    banned = ("worldsim.kernels", "worldsim.engine", "worldsim.neural", "worldsim.frame")
    for name, edges in graph.items():
        if name.startswith("worldsim.model"):
            bad = [e for e in edges if e.startswith(banned)]
            assert not bad, f"{name} imports {bad}"
