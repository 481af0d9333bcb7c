"""Count tasks: independent Poisson, binomial, negative binomial or geometric variables.

E Σ_i f(z_i) with learnable parameters (rate λ_i or success probability p_i, one per
variable) and f one of
    quadratic  (z − t)²: exact gradient from E(z − t)² = Var z + (E z − t)², by autograd
               (Poisson: d/dλ = 1 + 2(λ − t));
    absolute   |z − t|  and  log1p  log(1 + z) (t unused): exact gradient by enumerating
               the values 0..grid−1 of each variable, where P(z ≥ grid) ≤ 1e-15 (all N + 1
               values for the binomial, so nothing is dropped); the dropped mass is
               recorded as the metric ``exact_dropped_mass``.
Categorical estimators see the variables through the truncated categorical view
(values 0..K−1, the last bin holding the tail), with K set by ``view_n`` or
``view_eps`` (by default the binomial's whole support, else the sampling grid: dropped mass ≤ 1e-15);
the view's level and dropped mass are recorded with their measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from gradbench.contract import Problem, Task
from gradbench.families.counts import DISTRIBUTIONS, VIEW_EPS, CountDistribution
from gradbench.families.categorical import Objective
from gradbench.errors import SpecError
from gradbench.params import param
from gradbench.registry import tasks

OBJECTIVES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "quadratic": lambda z, t: (z - t) ** 2,
    "absolute": lambda z, t: (z - t).abs(),
    "log1p": lambda z, t: torch.log1p(z),
}


class CountProblem(Problem):
    """E Σ_i f(z_i) for independent counts with parameters ``values [B]`` (group ``rate`` or ``probs``).

    fixed: the family's non-learned arguments (``total_count``). target: ``[B]``.
    """

    def __init__(self, family: str, values: Tensor, fixed: dict, target: Tensor, objective: str,
                 view_n: int | None, view_eps: float | None):
        self.cls = DISTRIBUTIONS[family]
        self.family, self.group = family, self.cls.group
        self.values, self.fixed, self.target, self.kind = values, fixed, target, objective
        self.pointwise = lambda z: OBJECTIVES[objective](z, target)  # [..., B] -> [..., B]
        self.objective = Objective(lambda z: self.pointwise(z).sum(-1))
        # Host-side truncation levels, once: every later distribution reuses them without a sync.
        self.template = self.cls(values.unsqueeze(0), **fixed)
        self.grid, self.span = self.template.grid, self.template.span
        self.view_level = self.template.truncation_level(view_n, view_eps)

    def parameters(self):
        return {self.group: self.values}

    def distribution(self, params) -> CountDistribution:
        return self.cls(params[self.group], grid=self.grid, view_level=self.view_level, span=self.span, **self.fixed)

    def exact_gradient(self):
        values = self.values.detach().clone().requires_grad_(True)
        dist = self.distribution({self.group: values.unsqueeze(0)})
        if self.kind == "quadratic":
            expectation = (dist.variance + (dist.mean - self.target) ** 2).sum()
        else:
            z = torch.arange(self.grid, dtype=values.dtype, device=values.device).unsqueeze(-1).expand(-1, len(values))
            pmf = dist.log_pmf_head(self.grid)[0].exp().T  # [grid, B]
            expectation = (pmf * self.pointwise(z)).sum()
        return {self.group: torch.autograd.grad(expectation, values)[0]}

    def exact_dropped_mass(self) -> float:
        """Mass the exact gradient leaves out: 0 for the closed form, P(z ≥ grid) for enumeration."""
        return 0.0 if self.kind == "quadratic" else self.template.tail_mass(self.grid)

    def diagnostics(self, family):
        out = {"exact_dropped_mass": self.exact_dropped_mass()}
        if family == "categorical":
            out.update(view_truncation_level=float(self.view_level),
                       view_dropped_mass=self.template.tail_mass(self.view_level))
        return out


def _target(default: float = 2.5):
    return param((default,), "target t in f(z) = (z − t)² or |z − t|: one value, or one per variable",
                 kind="floats", min_len=1)


def _objective():
    return param("quadratic", "f per variable: 'quadratic' (z − t)² (closed-form gradient), 'absolute' |z − t| "
                              "or 'log1p' log(1 + z) (gradients by enumeration)", choices=tuple(OBJECTIVES))


def _view_n():
    return param(None, "categorical view: values 0..view_n−1, the last bin holding the tail (overrides view_eps)",
                 kind="int", optional=True, ge=2)


def _view_eps():
    return param(None, "categorical view, when view_n is unset: the smallest level whose dropped mass P(z ≥ K) is "
                       f"≤ view_eps for every variable (unset: {VIEW_EPS:g}, or the binomial's whole support)",
                 kind="float", optional=True, ge=1e-15, lt=1.0)


def _probs(default: tuple):
    return param(default, "success probability p_i ∈ (0, 1), one per variable", kind="floats", gt=0.0, lt=1.0,
                 min_len=1)


@dataclass(frozen=True)
class _CountTask(Task):
    """Shared behaviour and parameters of the count tasks; subclasses add their distribution's parameters
    (and may redeclare ``target`` with another default)."""

    exact = True
    dtype = "float64"
    target: tuple = _target()
    objective: str = _objective()
    view_n: int | None = _view_n()
    view_eps: float | None = _view_eps()

    def _values(self) -> tuple:
        return self.rate if hasattr(self, "rate") else self.probs

    def _fixed(self) -> dict:
        return {"total_count": self.total_count} if hasattr(self, "total_count") else {}

    def __post_init__(self):
        size = len(self._values())
        if len(self.target) not in (1, size):
            raise SpecError(f"{self.name}: target has {len(self.target)} values for {size} variables; "
                            "give one value or one per variable")

    def problem(self, device, dtype):
        values = torch.tensor(self._values(), device=device, dtype=dtype)
        target = torch.tensor(self.target, device=device, dtype=dtype).expand(len(values)).clone()
        return CountProblem(self.name, values, self._fixed(), target, self.objective, self.view_n, self.view_eps)


@tasks.register
@dataclass(frozen=True)
class PoissonTask(_CountTask):
    """Independent Poisson(λ_i) counts, f = Σ_i (z_i − t_i)² (or |z − t|, log(1 + z)); gradient in λ."""

    name = "poisson"
    families = ("poisson", "categorical")
    groups = ("rate",)
    rate: tuple = param((0.5, 3.0, 8.0), "rate λ_i > 0, one per variable", kind="floats", gt=0.0, min_len=1)


@tasks.register
@dataclass(frozen=True)
class BinomialTask(_CountTask):
    """Independent Binomial(N, p_i) counts (finite support, never truncated); gradient in p."""

    name = "binomial"
    families = ("binomial", "categorical")
    groups = ("probs",)
    total_count: int = param(10, "number of trials N (a positive integer)", ge=1)
    probs: tuple = _probs((0.2, 0.5, 0.7))
    target: tuple = _target(4.5)


@tasks.register
@dataclass(frozen=True)
class NegativeBinomialTask(_CountTask):
    """Independent NegativeBinomial(r, p_i) counts (successes before the r-th failure); gradient in p."""

    name = "negative-binomial"
    families = ("negative-binomial", "categorical")
    groups = ("probs",)
    total_count: float = param(3.0, "number of failures r > 0 (real values allowed)", gt=0.0)
    probs: tuple = _probs((0.3, 0.6))


@tasks.register
@dataclass(frozen=True)
class GeometricTask(_CountTask):
    """Independent Geometric(p_i) counts (failures before the first success); gradient in p."""

    name = "geometric"
    families = ("geometric", "categorical")
    groups = ("probs",)
    probs: tuple = _probs((0.3, 0.6))
    target: tuple = _target(1.5)
