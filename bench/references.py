"""Reference gradients: exact where the support can be enumerated, else high-sample RLOO.

exact: the task's closed form if it has one, otherwise autograd of
    Σ_x p_θ(x) f(x) over every joint configuration of the variables.
reinforce: REINFORCE with a leave-one-out baseline (:class:`~gradbench.reinforce.LeaveOneOut`,
    the core's own copy of ``rloo``, or the problem's own ``reinforce_reference`` when it has one) over
    groups of m draws; its standard error comes from the spread of the group
    estimates and widens every bias interval measured against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .contract import Problem
from .errors import UserError
from .noise import derive_seed
from .options import REFERENCE_MODES, check_value
from .reinforce import LeaveOneOut
from .engine import MeasureConfig, measure
from .view import replicate

MODES = REFERENCE_MODES
MAX_CONFIGURATIONS = 1 << 20


@dataclass
class Reference:
    """A reference gradient per parameter group.

    gradient: ``{group: [P]}`` float64. variance: trace covariance of the reference's
    own error (0 for exact). samples: evaluations of f behind it (0 for exact).
    """

    kind: str
    samples: int
    gradient: dict[str, Tensor]
    variance: dict[str, float]

    def stderr(self, group: str) -> float:
        return math.sqrt(self.variance[group])


def exact_gradient(problem: Problem, max_configurations: int = MAX_CONFIGURATIONS) -> dict[str, Tensor] | None:
    """Closed form if the problem has one, else enumeration; None if neither is feasible."""
    closed = problem.exact_gradient()
    if closed is not None:
        return {k: v.detach().reshape(-1).to(torch.float64) for k, v in closed.items()}
    return enumerate_gradient(problem, max_configurations)


def enumerate_gradient(problem: Problem, max_configurations: int = MAX_CONFIGURATIONS) -> dict[str, Tensor] | None:
    """∇θ Σ_x p_θ(x) f(x) over all joint configurations, or None if there are too many."""
    params = replicate(problem.parameters(), 1)
    dist = problem.distribution(params)
    support = dist.support()  # [V, *event]
    if support is None:  # dependent variables (a decision sequence): no product grid; the problem enumerates
        return None
    n_vars = math.prod(dist.batch_shape)
    if support.shape[0] ** n_vars > max_configurations:
        return None
    values = torch.arange(support.shape[0], device=support.device)
    grid = torch.cartesian_prod(*[values] * n_vars) if n_vars > 1 else values.reshape(-1, 1)
    x = support[grid.reshape(-1, n_vars)].reshape(-1, *dist.batch_shape, *support.shape[1:])  # [C, *batch, *event]
    log_p = dist.log_prob(x.unsqueeze(1)).reshape(x.shape[0], -1).sum(1)  # [C]
    fx = problem.objective(x)
    fx = fx.reshape(x.shape[0], -1).sum(1)
    weights = log_p.exp()
    expectation = (weights * torch.where(weights > 0, fx, torch.zeros_like(fx))).sum()
    grads = torch.autograd.grad(expectation, list(params.values()), allow_unused=True)
    return {
        k: (g if g is not None else torch.zeros_like(p)).reshape(-1).detach().to(torch.float64)
        for (k, p), g in zip(params.items(), grads)
    }


def reinforce_reference(problem: Problem, samples: int, seed: int, chunk_size: int = 1 << 16,
                        progress: Callable[[int], None] | None = None) -> Reference:
    """RLOO over ``samples`` draws in groups of m (up to 1000, at least 20 groups)."""
    check_value("reference_samples", samples)
    custom = problem.reinforce_reference(samples, seed, progress)
    if custom is not None:
        return custom
    m = max(2, min(1000, samples // 20))
    groups = samples // m
    rloo = LeaveOneOut(m=m)
    config = MeasureConfig(samples=groups, seed=derive_seed(seed, "reference"), chunk_size=chunk_size)
    result = measure(problem, rloo, None, config,
                     progress=(lambda k: progress(k * m)) if progress else None)
    gradient, variance = {}, {}
    for group, summary in result.groups.items():
        if summary.status != "ok":
            raise UserError(f"the REINFORCE reference failed for {group!r}: {summary.message}")
        gradient[group] = summary.mean
        variance[group] = summary.metrics["variance"].value / groups
    return Reference("reinforce", groups * m, gradient, variance)


def resolve_reference(problem: Problem, mode: str, samples: int, seed: int, chunk_size: int = 1 << 16,
                      progress: Callable[[int], None] | None = None) -> Reference:
    """The reference for ``mode`` in MODES; ``auto`` prefers exact."""
    check_value("reference", mode)
    if mode in ("auto", "exact"):
        exact = exact_gradient(problem)
        if exact is not None:
            return Reference("exact", 0, exact, {k: 0.0 for k in exact})
        if mode == "exact":
            raise UserError("this task's support is too large to enumerate and it has no closed form; "
                            "use --reference reinforce")
    return reinforce_reference(problem, samples, seed, chunk_size, progress)
