"""Device lint: every tensor the harness creates says on which device it lives.

A factory call without ``device=`` makes a CPU tensor, which on a CUDA run either fails
("Expected all tensors to be on the same device") or silently computes on the CPU.
This static check flags ``torch.zeros/ones/arange/...`` calls in the installed code
(bench/, estimators/, tasks/) that name no device; a tensor meant for the CPU says
``device="cpu"`` so the intent is visible. Calls that legitimately take no device go in
ALLOWED with the reason. tests/test_device_consistency.py checks the same at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("bench", "estimators", "tasks")
FACTORIES = {
    "zeros", "ones", "empty", "full", "arange", "range", "linspace", "logspace", "eye", "tensor", "as_tensor",
    "rand", "randn", "randint", "randperm", "bernoulli_", "empty_strided", "scalar_tensor", "Generator",
}
# (path relative to the repo, enclosing function, factory): why it needs no device.
ALLOWED: dict[tuple[str, str, str], str] = {}


def _device_given(call: ast.Call, factory: str) -> bool:
    if any(k.arg == "device" or k.arg is None for k in call.keywords):  # device= or **kwargs
        return True
    # torch.Generator(device) takes the device positionally.
    return factory == "Generator" and len(call.args) >= 1


def unplaced_factory_calls(source: str) -> list[tuple[int, str, str]]:
    """``[(line, enclosing function, factory)]`` of torch factory calls that name no device."""
    found: list[tuple[int, str, str]] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else scope
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == "torch"
                    and child.func.attr in FACTORIES and not _device_given(child, child.func.attr)):
                found.append((child.lineno, scope, child.func.attr))
            visit(child, inner)

    visit(ast.parse(source), "<module>")
    return found


def _offences() -> list[str]:
    out = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, scope, factory in unplaced_factory_calls(path.read_text()):
                if (rel, scope, factory) not in ALLOWED:
                    out.append(f"{rel}:{line} in {scope}: torch.{factory}(...) names no device")
    return out


def test_every_factory_call_in_the_harness_names_its_device():
    offences = _offences()
    assert not offences, "add device=<the problem's device> (or device='cpu' on purpose):\n" + "\n".join(offences)


@pytest.mark.parametrize("code, flagged", [
    ("torch.zeros(3)", True),
    ("torch.zeros(3, device=x.device)", False),
    ("torch.tensor([1.0], dtype=torch.float64)", True),
    ("torch.full((2,), 1.0, **like)", False),
    ("torch.Generator()", True),
    ("torch.Generator(x.device)", False),
    ("torch.zeros_like(x)", False),  # *_like inherit the device
    ("def f():\n    return torch.arange(\n        5,\n    )", True),  # multi-line calls too
])
def test_the_lint_flags_what_it_should(code, flagged):
    assert bool(unplaced_factory_calls(code)) == flagged


def test_allowlist_entries_still_exist():
    """A stale allowlist entry would hide nothing but still reads as a reason; keep it honest."""
    present = set()
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            present |= {(rel, scope, factory) for _, scope, factory in unplaced_factory_calls(path.read_text())}
    assert set(ALLOWED) <= present, set(ALLOWED) - present
