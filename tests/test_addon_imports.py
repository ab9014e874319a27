"""The add-on's modules import one another one way: the graph of every relative import in
``blender_addon/*.py`` -- at the top of a file or inside a function -- has no cycle.

A function-local import hides a cycle from Python (it only runs later) but not from the reader, so
it counts here like any other. Runs without bpy: the files are parsed, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import build_addon

ADDON = build_addon.ADDON


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ADDON.glob("*.py"))}


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """The add-on modules ``path`` imports (``from . import x``, ``from .x import y``), anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1, f"{path.name}:{node.lineno}: imports from above the add-on"
            if node.module is None:  # from . import a, b: modules, or names of __init__
                found |= {a.name if a.name in modules else "__init__" for a in node.names}
            elif node.module.split(".")[0] in modules:
                found.add(node.module.split(".")[0])
            else:
                # the vendored copy of shared/ (it cannot import the add-on back); nothing else
                assert node.module.split(".")[0] == build_addon.VENDORED, f"{path.name}: from .{node.module}"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n.split(".")[0] in ("blender_addon", "headrig", "shared", "backend") for n in names), \
                f"{path.name}:{node.lineno}: imports {names} absolutely; the add-on imports itself relatively"
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports_of(path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], else None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_function_local_imports_count(tmp_path):
    (tmp_path / "one.py").write_text("def f():\n    from .two import g\n    return g\n")
    assert _imports_of(tmp_path / "one.py", {"one", "two"}) == {"two"}


def test_addon_imports_form_no_cycle():
    graph = import_graph()
    assert {"heads", "jobs", "drain", "importer", "turntable", "gaussians"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    # the shared pieces import nothing of the add-on: everything may lean on them
    assert graph["heads"] == set() and graph["worker"] == set()
    assert not any("__init__" in deps for name, deps in graph.items() if name != "__init__")
