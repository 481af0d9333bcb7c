"""The m-sample importance-weighted bound of a latent-variable problem, and its exact gradient.

Tasks that offer importance weights (``offers = ("importance_weights",)``) give an
objective with ``log_joint`` (log p(x, z) per unit) and a distribution q(z). An
estimator that requires them (``requires = ("importance_weights",)``, VIMCO) is
measured on :class:`ImportanceWeightedBound` with m = ``estimator.n_evaluations()``:

    E_{z_1..z_m ~ q_θ} Σ_units −log (1/m) Σ_j p(x, z_j)/q_θ(z_j),

a loss whose integrand itself depends on θ, so its gradient is not that of a plain
E[f(z)]: the enumeration below differentiates through both the sampling weights
and the bound. A REINFORCE reference would estimate the wrong objective, so when
the tuples cannot be enumerated there is no reference and measuring fails cleanly.

A task wires it in with :func:`problem_for`::

    def for_estimator(self, estimator):
        return problem_for(self, estimator)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .contract import Estimator, Problem
from .errors import UserError

MAX_TUPLES = 1 << 20
IMPORTANCE_WEIGHTS = "importance_weights"


class ImportanceWeightedBound(Problem):
    """The m-sample bound (a loss, summed over units) of ``base``; same parameters and distribution."""

    def __init__(self, base: Problem, m: int):
        if base.objective.log_joint is None:
            raise TypeError("the m-sample bound needs an objective with log_joint")
        self.base, self.m = base, m
        self.family = base.family
        self.objective = base.objective

    def parameters(self):
        return self.base.parameters()

    def distribution(self, params):
        return self.base.distribution(params)

    def exact_gradient(self) -> dict[str, Tensor]:
        """∇θ of the bound by enumerating every m-tuple of one unit's configurations, all units at once."""
        from .view import replicate

        params = replicate(self.parameters(), 1)
        dist = self.distribution(params)
        support = dist.support()  # [V, *event]
        units, variables = dist.batch_shape[: dist.units], dist.batch_shape[dist.units :]
        configs = support.shape[0] ** math.prod(variables)
        if configs**self.m > MAX_TUPLES:
            raise UserError(f"the {self.m}-sample bound has {configs}^{self.m} tuples per unit, too many to "
                            f"enumerate (limit {MAX_TUPLES}), and a REINFORCE reference does not apply to it; "
                            "use fewer samples m or a smaller task")
        values = torch.arange(support.shape[0], device=support.device)
        grid = torch.cartesian_prod(*[values] * math.prod(variables)).reshape(configs, -1)
        one_unit = support[grid].reshape(configs, *variables, *support.shape[1:])  # [C, *vars, *event]
        lead = (1,) * len(units)
        x = one_unit.reshape(configs, *lead, *one_unit.shape[1:]).expand(configs, *units, *one_unit.shape[1:])
        log_q = dist.log_prob_units(x.unsqueeze(1)).squeeze(1)  # [C, *units]
        log_w = self.objective.joint(x) - log_q
        tuples = torch.cartesian_prod(*[torch.arange(configs, device=x.device)] * self.m).reshape(-1, self.m)
        bound = torch.logsumexp(log_w[tuples], 1) - math.log(self.m)  # [C^m, *units]
        weight = log_q[tuples].sum(1).exp()  # q(z_1)···q(z_m) per unit
        expectation = -(weight * bound).sum()
        grads = torch.autograd.grad(expectation, list(params.values()), allow_unused=True)
        return {k: (g if g is not None else torch.zeros_like(p)).reshape(-1) for (k, p), g in zip(params.items(), grads)}


def problem_for(problem: Problem, estimator: Estimator) -> Problem:
    """``problem`` itself, or its m-sample bound for an estimator requiring importance weights.

    One bound object per m, cached on ``problem``, so a run computes one reference per m.
    """
    if IMPORTANCE_WEIGHTS not in estimator.requires:
        return problem
    cache = problem.__dict__.setdefault("_bounds", {})
    m = estimator.n_evaluations()
    if m not in cache:
        cache[m] = ImportanceWeightedBound(problem, m)
    return cache[m]
