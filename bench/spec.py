"""``NAME`` or ``NAME(key=value, ...)``: how estimators and tasks are named on the command line.

Values are Python literals read with :func:`ast.literal_eval`; nothing is ever
evaluated. Names may contain hyphens (``toy-quadratic``), so the name is split
off before the argument list is handed to :mod:`ast`.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class Spec:
    """A parsed spec: a registry name and the keyword arguments given explicitly."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.kwargs:
            return self.name
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"

    def params_json(self) -> str:
        """The explicit kwargs as canonical JSON (sorted keys), for results tables."""
        return json.dumps(self.kwargs, sort_keys=True)


def parse_spec(text: str) -> Spec:
    """Parse ``NAME`` or ``NAME(key=value, ...)``.

    >>> parse_spec("gst(gap=1.2, tau=0.5)")
    Spec(name='gst', kwargs={'gap': 1.2, 'tau': 0.5})
    """
    text = text.strip()
    match = _NAME.match(text)
    if not match:
        raise SpecError(f"cannot read {text!r}: expected NAME or NAME(key=value, ...)")
    name, rest = match.group(0), text[match.end():].strip()
    if not rest:
        return Spec(name)
    if not (rest.startswith("(") and rest.endswith(")")):
        raise SpecError(f"cannot read {text!r}: expected NAME(key=value, ...) after {name!r}")
    try:
        call = ast.parse("_" + rest, mode="eval").body
    except SyntaxError as exc:
        raise SpecError(f"cannot read the arguments of {text!r}: {exc.msg}; write them as key=value, ...") from None
    if not isinstance(call, ast.Call):
        raise SpecError(f"cannot read {text!r}: expected NAME(key=value, ...)")
    if call.args:
        raise SpecError(f"{name}: arguments must be named (key=value), got a positional one in {text!r}")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise SpecError(f"{name}: '**' is not allowed in a spec")
        if keyword.arg in kwargs:
            raise SpecError(f"{name}: {keyword.arg!r} is given twice")
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, SyntaxError, TypeError):
            source = ast.get_source_segment("_" + rest, keyword.value) or "?"
            raise SpecError(
                f"{name}: {keyword.arg}={source} is not a literal (use numbers, strings in quotes, "
                "True/False, None or lists)"
            ) from None
    return Spec(name, kwargs)
