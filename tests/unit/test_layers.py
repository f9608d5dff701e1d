"""The package's rooms stand on floors: no import (at module top or inside a function) makes a
circle between two rooms, and product code never imports the lab."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "galley"


def _room(module: str) -> str:
    """The room of a galley module: its folder below galley/, or the top-level module."""
    return ".".join(module.split(".")[:2])


def _imports() -> dict[str, set[str]]:
    """Each room's imports of other galley rooms."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        room = _room(module.removesuffix(".__init__"))
        graph.setdefault(room, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "galley":
                    names = [f"galley.{alias.name}" for alias in node.names]
            for name in names:
                if name.startswith("galley.") and _room(name) != room:
                    graph[room].add(_room(name))
    return graph


def test_no_two_rooms_import_each_other_through_any_path():
    graph = _imports()
    assert {"galley.etcd", "galley.vault", "galley.components", "galley.ops"} <= set(graph)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"rooms in a circle: {' -> '.join(exc.args[1])}") from None
    # Vault and etcd's own knowledge stand below the components that use them.
    assert order.index("galley.vault") < order.index("galley.components")
    assert order.index("galley.etcd") < order.index("galley.host")


def test_product_code_never_imports_the_lab():
    graph = _imports()
    importers = sorted(room for room, uses in graph.items() if "galley.lab" in uses)
    # The command line hands `galley lab` over inside its handler, when asked for it.
    assert importers == ["galley.cli"]
    source = (PACKAGE / "cli.py").read_text()
    top_level = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("galley.lab")
    ]
    assert top_level == []
