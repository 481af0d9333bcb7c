"""The import graph of gradbench and the layering rules it must keep.

Every module under bench/, estimators/, tasks/ and reports/ is parsed with ``ast``
(nothing is imported), and each ``import``/``from ... import`` becomes an edge,
marked module-level (runs on import) or function-level (inside a def, runs on call).
Both kinds count: a cycle hidden inside a function is still a cycle in the design.

Rules (issue 11; "data flows one way"):
  - no cycle among the core's modules (bench/, i.e. gradbench.* outside the
    estimators, tasks and reports subpackages), module- and function-level together;
  - tasks/ never imports the measuring engine (gradbench.engine);
  - bench/ never imports gradbench.tasks or gradbench.estimators (the core knows none by name);
  - reports/ never imports gradbench.registry (reports read stored results, not code);
  - estimators/ and tasks/ never import each other.

Usage: python tests/benchmarks/import_graph.py   (prints the graph summary and any
violation; exit code 1 when a rule is broken). tests/test_import_graph.py asserts the same.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Source folder -> the package it installs as (pyproject.toml's package-dir).
PACKAGES = {"bench": "gradbench", "estimators": "gradbench.estimators", "tasks": "gradbench.tasks",
            "reports": "gradbench.reports"}
LAYERS = ("gradbench.estimators", "gradbench.tasks", "gradbench.reports")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    level: str  # "module" or "function"


def modules() -> dict[str, Path]:
    """Every module's dotted name -> its file."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def layer(module: str) -> str:
    """'core' or the subpackage (estimators, tasks, reports) a module belongs to."""
    return next((p for p in LAYERS if module == p or module.startswith(p + ".")), "core")


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` names or lies inside."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def edges(found: dict[str, Path] | None = None) -> list[Edge]:
    found = found or modules()
    known = set(found)
    out = []
    for module, path in found.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))

        def visit(node: ast.AST, level: str) -> None:
            for child in ast.iter_child_nodes(node):
                inner = "function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else level
                targets = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                        base = ".".join([*anchor, base]) if base else ".".join(anchor)
                    # "from pkg import sub" imports the submodule when there is one.
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in child.names]
                for name in targets:
                    target = _resolve(name, known)
                    edge = Edge(module, target, child.lineno, level)
                    if target is not None and target != module and edge not in out:
                        out.append(edge)
                visit(child, inner)

        visit(tree, "module")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, result = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return result


def violations(all_edges: list[Edge] | None = None) -> list[str]:
    """Every broken rule, one line each (empty when the layering holds)."""
    all_edges = edges() if all_edges is None else all_edges
    problems = []
    core: dict[str, set[str]] = {}
    for e in all_edges:
        if layer(e.source) == "core" and layer(e.target) == "core" and e.target != "gradbench":
            core.setdefault(e.source, set()).add(e.target)
    for component in cycles(core):
        inside = [e for e in all_edges if e.source in component and e.target in component]
        problems.append("core cycle: " + " <-> ".join(component) + " via "
                        + ", ".join(f"{e.source}:{e.line}->{e.target} ({e.level})" for e in inside))
    rules = [
        ("gradbench.tasks", lambda t: t == "gradbench.engine", "a task imports the measuring engine"),
        ("core", lambda t: layer(t) in ("gradbench.tasks", "gradbench.estimators"), "the core imports a built-in"),
        ("gradbench.reports", lambda t: t == "gradbench.registry", "reports import the registry"),
        ("gradbench.estimators", lambda t: layer(t) == "gradbench.tasks", "an estimator imports a task"),
        ("gradbench.tasks", lambda t: layer(t) == "gradbench.estimators", "a task imports an estimator"),
    ]
    for where, bad, what in rules:
        for e in all_edges:
            if layer(e.source) == where and bad(e.target):
                problems.append(f"{what}: {e.source}:{e.line} -> {e.target} ({e.level}-level)")
    return problems


def main() -> int:
    found = modules()
    all_edges = edges(found)
    print(f"{len(found)} modules, {len(all_edges)} import edges "
          f"({sum(e.level == 'module' for e in all_edges)} module-level, "
          f"{sum(e.level == 'function' for e in all_edges)} function-level)")
    for name in ("core", *LAYERS):
        members = [m for m in found if layer(m) == name]
        uses = sorted({layer(e.target) for e in all_edges if layer(e.source) == name and layer(e.target) != name})
        print(f"  {name:22s} {len(members):3d} modules; imports from: {', '.join(uses) or '-'}")
    print("function-level edges inside the core:")
    for e in all_edges:
        if e.level == "function" and layer(e.source) == "core" and layer(e.target) == "core":
            print(f"  {e.source}:{e.line} -> {e.target}")
    problems = violations(all_edges)
    print(f"{len(problems)} violation(s)" + (":" if problems else " (no core cycles; tasks never import the engine; "
          "the core imports no task or estimator; reports never import the registry)"))
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
