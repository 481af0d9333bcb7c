"""Declared hyperparameters: what a spec may set, with types, defaults and ranges.

Estimators and tasks are dataclasses whose fields are declared with :func:`param`.
The declaration is plain data (it serialises into the catalog), so specs can be
validated and listed without importing torch or the estimator's module.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import SpecError, did_you_mean

KINDS = ("float", "int", "bool", "str", "floats", "ints", "any")


@dataclass(frozen=True)
class Param:
    """One declared hyperparameter.

    kind: "float", "int", "bool", "str", "floats" (list of floats), "ints" or "any".
    gt/ge/lt/le: bounds for numbers (each element, for lists).
    choices: allowed values for str params, or extra literal values a numeric
        param also accepts (``gap`` is a float ≥ 0 or the string "p").
    optional: None is accepted (and means "derive it", as the doc says).
    """

    name: str
    kind: str
    default: Any
    doc: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    optional: bool = False
    min_len: int | None = None

    def to_json(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "default"}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out

    @classmethod
    def from_json(cls, data: dict) -> Param:
        data = dict(data)
        if "choices" in data:
            data["choices"] = tuple(data["choices"])
        return cls(**data)

    def describe_range(self) -> str:
        """Human-readable accepted values, e.g. '> 0', 'one of ...'."""
        parts = []
        for op, bound in (("> ", self.gt), ("≥ ", self.ge), ("< ", self.lt), ("≤ ", self.le)):
            if bound is not None:
                parts.append(f"{op}{bound:g}")
        text = " and ".join(parts)
        if self.choices:
            shown = ", ".join(repr(c) for c in self.choices)
            if self.kind == "str":
                text = f"one of {shown}"
            else:
                text = f"{text} or {shown}" if text else shown
        return text

    def validate(self, owner: str, value: Any) -> Any:
        """Return the value, coerced to the declared kind, or raise SpecError."""
        where = f"{owner}: {self.name}"
        if value is None:
            if self.optional:
                return None
            raise SpecError(f"{where} must be set ({self.kind}); None is not allowed")
        if self.choices is not None and self.kind != "str" and _in_choices(value, self.choices):
            return value
        if self.kind == "any":
            return value
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise SpecError(f"{where} must be True or False, got {value!r}")
        if self.kind == "str":
            if not isinstance(value, str):
                raise SpecError(f"{where} must be a string, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise SpecError(f"{where} must be {self.describe_range()}, got {value!r}{did_you_mean(value, self.choices)}")
            return value
        if self.kind in ("float", "int"):
            return self._number(where, value)
        if self.kind in ("floats", "ints"):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise SpecError(f"{where} must be a list of numbers, got {value!r}")
            if self.min_len is not None and len(value) < self.min_len:
                raise SpecError(f"{where} needs at least {self.min_len} values, got {len(value)}")
            return [self._number(f"{where}[{i}]", v, self.kind[:-1]) for i, v in enumerate(value)]
        raise AssertionError(f"unknown param kind {self.kind}")

    def _number(self, where: str, value: Any, kind: str | None = None) -> float | int:
        kind = kind or self.kind
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            extra = f" or {self.describe_range()}" if self.choices else ""
            raise SpecError(f"{where} must be a{'n integer' if kind == 'int' else ' number'}{extra}, got {value!r}")
        if kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise SpecError(f"{where} must be an integer, got {value!r}")
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise SpecError(f"{where} must be finite, got {value!r}")
        for ok, bound, op in (
            (self.gt is None or value > self.gt, self.gt, ">"),
            (self.ge is None or value >= self.ge, self.ge, "≥"),
            (self.lt is None or value < self.lt, self.lt, "<"),
            (self.le is None or value <= self.le, self.le, "≤"),
        ):
            if not ok:
                raise SpecError(f"{where} must be {self.describe_range()}, got {value!r}")
        return value


def _in_choices(value: Any, choices: tuple) -> bool:
    return isinstance(value, str) and value in choices


def param(default: Any, doc: str, *, kind: str | None = None, **constraints: Any):
    """A dataclass field declaring a hyperparameter (see :class:`Param`).

    The kind is inferred from the default when not given; list defaults are
    stored as tuples so the dataclass stays hashable and immutable.
    """
    kind = kind or _infer_kind(default)
    if kind not in KINDS:
        raise ValueError(f"unknown param kind {kind!r}")
    stored = tuple(default) if isinstance(default, list) else default
    meta = {"param": dict(kind=kind, default=default, doc=doc, **constraints)}
    return dataclasses.field(default=stored, metadata=meta)


def _infer_kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, (list, tuple)):
        return "floats" if any(isinstance(v, float) for v in default) else "ints"
    return "any"


def plain(value: Any) -> Any:
    """A parameter value as JSON holds it: tuples (how frozen configurations store lists) become lists."""
    return list(value) if isinstance(value, (tuple, list)) else value


def declared_params(cls: type) -> dict[str, Param]:
    """The :class:`Param` declarations of a dataclass, in field order."""
    out = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata.get("param")
        if meta is not None:
            out[field.name] = Param(name=field.name, **meta)
    return out


def validate_kwargs(owner: str, params: dict[str, Param], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check keys and values of a spec against declarations; return coerced values."""
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            valid = ", ".join(params) or "none"
            raise SpecError(f"{owner}: unknown parameter {key!r}{did_you_mean(key, params)} (parameters: {valid})")
        out[key] = params[key].validate(owner, value)
    return out
