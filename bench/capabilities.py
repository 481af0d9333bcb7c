"""Capabilities that depend on the configuration, as typed values the catalog can store.

Most capabilities are plain values (``unbiased = True``, ``evaluations = 2``,
``families = ("categorical",)``). Two kinds depend on more than the class:

- :class:`FromParam`: set by a hyperparameter. ``unbiased = FromParam("normalize",
  negate=True)`` is unbiased exactly when ``normalize=False``; ``evaluations =
  FromParam("m")`` costs m evaluations of f.
- :class:`PerCategory`: evaluations of f that grow with the task,
  ``times·K·D + plus`` for K categories and D variables per unit (IndeCateR enumerates
  every category of every variable: ``PerCategory(plus=1)``, K·D + 1).

Both serialise to small JSON objects in catalog.json, so the registry reads and
resolves them without importing torch or the estimator's module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .params import Param


@dataclass(frozen=True)
class FromParam:
    """A capability read from hyperparameter ``param`` (a bool, negated when ``negate``; or an int)."""

    param: str
    negate: bool = False

    def resolve(self, values: Mapping[str, Any]) -> Any:
        """The capability for hyperparameter values ``{name: value}`` (the parameter must be present)."""
        value = values[self.param]
        return (not value) if self.negate else value

    def to_json(self) -> dict:
        return {"param": self.param, "negate": self.negate}

    def __str__(self) -> str:
        return f"!{self.param}" if self.negate else self.param

    def condition(self) -> str:
        """When a boolean capability holds: ``'hard=False'``."""
        return f"{self.param}={not self.negate}"


@dataclass(frozen=True)
class PerCategory:
    """``times·K·D + plus`` evaluations of f: K categories, D variables per unit of the task."""

    times: int = 1
    plus: int = 0

    def count(self, categories: int, variables: int) -> int:
        return self.times * categories * variables + self.plus

    def count_for(self, dist: Any) -> int:
        """The count on a categorical distribution ``[n, *units, *variables, K]``."""
        return self.count(dist.K, math.prod(dist.batch_shape[dist.units:]))

    def resolve(self, values: Mapping[str, Any]) -> PerCategory:
        return self  # known only once the task is: see count_for

    def to_json(self) -> dict:
        return {"per_category": self.times, "plus": self.plus}

    def __str__(self) -> str:
        term = "K·D" if self.times == 1 else f"{self.times}·K·D"
        return f"{term} + {self.plus}" if self.plus else term


@dataclass(frozen=True)
class PerVariable:
    """``min(k + extra, K)·D + plus`` evaluations of f: a hyperparameter ``param`` (k) of categories
    evaluated per variable (plus ``extra``, at most all K of them), D variables per unit of the task.

    The unordered set estimator: ``PerVariable("k", plus=1)``, min(k, K)·D + 1; sum-and-sample
    (k summed, one sampled unless k ≥ K): ``PerVariable("k", extra=1, plus=1)``.
    ``value`` is k once :meth:`resolve` has read it from a configuration.
    """

    param: str
    extra: int = 0
    plus: int = 0
    value: int | None = None

    def count(self, categories: int, variables: int) -> int:
        if self.value is None:
            raise TypeError(f"{self}: resolve it with the estimator's parameters first")
        return min(self.value + self.extra, categories) * variables + self.plus

    def count_for(self, dist: Any) -> int:
        """The count on a categorical distribution ``[n, *units, *variables, K]``."""
        return self.count(dist.K, math.prod(dist.batch_shape[dist.units:]))

    def resolve(self, values: Mapping[str, Any]) -> PerVariable:
        return PerVariable(self.param, self.extra, self.plus, int(values[self.param]))

    def to_json(self) -> dict:
        return {"per_variable": self.param, "extra": self.extra, "plus": self.plus}

    def __str__(self) -> str:
        k = f"{self.param} + {self.extra}" if self.extra else self.param
        term = f"min({k}, K)·D"
        return f"{term} + {self.plus}" if self.plus else term


CAPABILITY_TYPES = (FromParam, PerCategory, PerVariable)
PER_TASK = (PerCategory, PerVariable)  # evaluation counts known only once the task is


def to_json(value: Any) -> Any:
    """A declared capability as JSON (tuples as lists, typed capabilities as objects)."""
    if isinstance(value, CAPABILITY_TYPES):
        return value.to_json()
    if isinstance(value, str) and (value.startswith("!") or "·" in value):
        raise TypeError(f"capability {value!r} is a string; declare FromParam(...) or PerCategory(...) "
                        "from gradbench.capabilities instead")
    return list(value) if isinstance(value, tuple) else value


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json`."""
    if isinstance(value, dict) and "param" in value:
        return FromParam(value["param"], bool(value.get("negate", False)))
    if isinstance(value, dict) and "per_category" in value:
        return PerCategory(int(value["per_category"]), int(value.get("plus", 0)))
    if isinstance(value, dict) and "per_variable" in value:
        return PerVariable(value["per_variable"], int(value.get("extra", 0)), int(value.get("plus", 0)))
    return value


def resolve(value: Any, params: Mapping[str, Param], kwargs: Mapping[str, Any] | None = None) -> Any:
    """A capability for a configuration: ``kwargs`` over the declared ``params``' defaults."""
    if not isinstance(value, CAPABILITY_TYPES):
        return value
    values = {name: p.default for name, p in params.items()}
    values.update(kwargs or {})
    return value.resolve(values)


def _when(value: Any) -> str:
    """FromParam('hard', negate=True) -> ' when hard=False'; '' for a plain value."""
    return f" when {value.condition()}" if isinstance(value, FromParam) else ""


def estimator_lines(caps: Mapping[str, Any]) -> list[str]:
    """An estimator's declared capabilities as short lines (``gradbench list``, docs/estimators.md)."""
    unbiased = caps["unbiased"]
    lines = [
        ("unbiased" + _when(unbiased)) if isinstance(unbiased, FromParam) else "unbiased" if unbiased else "biased",
        "families: " + ", ".join("any" if f == "*" else f for f in caps["families"]),
        f"f evaluations: {caps['evaluations']}",
    ]
    for key, text in (("differentiable_f", "needs differentiable f"), ("relaxed_f", "evaluates f at relaxed points"),
                      ("stateful", "stateful"), ("masks", "masks")):
        if caps.get(key):
            lines.append(text + _when(caps[key]))
    return lines + [f"requires {r}" for r in caps.get("requires", [])]


def task_lines(caps: Mapping[str, Any]) -> list[str]:
    """A task's declared capabilities as short lines."""
    lines = [
        f"{caps['kind']} task",
        "families: " + ", ".join(caps["families"]),
        "exact reference" if caps["exact"] else "REINFORCE reference",
        "groups: " + ", ".join(caps["groups"]),
    ]
    if not caps.get("relaxed_f"):
        lines.append("f only at discrete points")
    return lines + [f"offers {o}" for o in caps.get("offers", [])]
