"""No import circles in edgekit: module-level and function-level imports alike (TYPE_CHECKING ones excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).parents[1] / "edgekit"


def _imports(tree: ast.AST) -> list[str]:
    found: list[str] = []

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.module.startswith("edgekit"):
                found.append(node.module)
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)

        def visit_Import(self, node: ast.Import) -> None:
            found.extend(alias.name for alias in node.names if alias.name.startswith("edgekit"))

    Visitor().visit(tree)
    return found


def import_graph() -> nx.DiGraph:
    modules = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, target) for target in _imports(ast.parse(path.read_text()))
                             if target in modules and target != name)
    return graph


def test_no_import_circles():
    circles = [sorted(component) for component in nx.strongly_connected_components(import_graph()) if len(component) > 1]
    assert circles == []


def test_the_walk_sees_lazy_imports():
    graph = import_graph()
    assert graph.has_edge("edgekit.compiler", "edgekit.autoselect")  # module level
    assert graph.has_edge("edgekit.evaluate", "edgekit.conditioning")  # inside a method
