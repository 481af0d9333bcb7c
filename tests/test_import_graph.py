"""The layering holds: no core cycles, tasks never import the engine, and so on.

The graph is read from source with ``ast`` by tests/benchmarks/import_graph.py
(which also prints it); here its rules are asserted, plus checks that the rule
checker itself can fail.
"""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("import_graph", Path(__file__).parent / "benchmarks" / "import_graph.py")
graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = graph  # dataclasses look their module up while the class is built
_spec.loader.exec_module(graph)


def test_the_import_graph_keeps_the_layering():
    edges = graph.edges()
    assert len(edges) > 100, "the parser found too few imports to be reading the sources"
    assert graph.violations(edges) == []


def test_the_checker_sees_function_level_cycles_and_layer_breaches():
    """A planted function-level cycle and a task importing the engine are both reported."""
    Edge = graph.Edge
    planted = [
        Edge("gradbench.params", "gradbench.registry", 1, "function"),
        Edge("gradbench.registry", "gradbench.params", 2, "module"),
        Edge("gradbench.tasks.toy", "gradbench.engine", 3, "function"),
        Edge("gradbench.reports.frame", "gradbench.registry", 4, "function"),
        Edge("gradbench.cli", "gradbench.tasks.listops.data", 5, "function"),
    ]
    problems = graph.violations(planted)
    assert any(p.startswith("core cycle: gradbench.params <-> gradbench.registry") for p in problems)
    assert any("task imports the measuring engine" in p for p in problems)
    assert any("reports import the registry" in p for p in problems)
    assert any("core imports a built-in" in p for p in problems)
    assert len(problems) == 4
