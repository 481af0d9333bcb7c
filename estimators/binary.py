"""Antithetic estimators for binary variables: ARM (Yin & Zhou 2019) and DisARM (Dong, Mnih & Tucker 2020).

One uniform vector u gives two exact, antithetic samples of b_d ~ Bernoulli(σ(θ_d)):
b = 1[u < σ(θ)] (the family's own sample, shared with REINFORCE) and
b̃ = 1[1 − u < σ(θ)]. Both estimators cost two evaluations of f, are unbiased, and
are gradients with respect to the logits θ. Per unit, with Δ = f(b) − f(b̃):

arm:    ĝ_d = −Δ·(u_d − ½)      (the paper's (f(1[u > σ(−θ)]) − f(1[u < σ(θ)]))(u − ½))
disarm: ĝ_d = ½·Δ·(−1)^{b̃_d}·1[b_d ≠ b̃_d]·σ(|θ_d|)

DisARM is ARM averaged over the u that give the same pair (b, b̃), so it never
has more variance; the estimate is zero for every variable whose pair agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution, Objective
from gradbench.registry import estimators

from .score_function import per_variable, sum_units


def antithetic_pair(dist: Distribution, f: Objective, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """b, b̃ ``[n, *batch]`` and f(b), f(b̃) ``[n, *units]`` (one call of f on both)."""
    b = dist.sample(u)
    b_anti = dist.sample(1 - u)
    fb, fa = f(torch.stack([b, b_anti]), lead=1)
    return b, b_anti, fb, fa


def gradient_surrogate(dist: Distribution, fb: Tensor, fa: Tensor, grad: Tensor) -> Surrogate:
    """Value ½(f(b) + f(b̃)) (its pathwise gradient is unbiased for f's own parameters);
    gradient ``grad [n, *batch]`` with respect to the logits."""
    theta = dist.params
    value = 0.5 * (fb + fa)
    return Surrogate(sum_units(value) + (grad.detach() * (theta - theta.detach())).reshape(theta.shape[0], -1).sum(1))


class _Antithetic(Estimator):
    """Shared capabilities: binary variables, two evaluations of f, unbiased."""

    unbiased = True
    families = ("bernoulli",)
    evaluations = 2
    masks = False  # binary variables only: no categories to mask


@estimators.register
@dataclass(frozen=True)
class ARM(_Antithetic):
    """ARM (Yin & Zhou 2019): augment-REINFORCE-merge with an antithetic pair. Unbiased, 2 evaluations."""

    name = "arm"

    def surrogate(self, dist, f, noise, state):
        u = noise["sample"]
        _, _, fb, fa = antithetic_pair(dist, f, u)
        grad = per_variable(fa - fb, dist) * (u - 0.5)
        return gradient_surrogate(dist, fb, fa, grad)


@estimators.register
@dataclass(frozen=True)
class DisARM(_Antithetic):
    """DisARM (Dong, Mnih & Tucker 2020): ARM Rao-Blackwellised over the antithetic pair. Unbiased, 2 evaluations."""

    name = "disarm"

    def surrogate(self, dist, f, noise, state):
        b, b_anti, fb, fa = antithetic_pair(dist, f, noise["sample"])
        theta = dist.params.detach()
        sign = 1 - 2 * b_anti  # (−1)^{b̃}
        weight = (b != b_anti).to(theta.dtype) * torch.sigmoid(theta.abs())
        grad = 0.5 * per_variable(fb - fa, dist) * sign * weight
        return gradient_surrogate(dist, fb, fa, grad)
