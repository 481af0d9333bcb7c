"""Relaxed and straight-through estimators (biased): Gumbel-Softmax, STGS, ST.

With G Gumbel noise and temperature τ, y = softmax((θ + G)/τ) is a relaxed sample
and D = one_hot(argmax(θ + G)) an exact one. Straight-through evaluates f at the
hard value and back-propagates through the soft one: D − sg(y) + y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.params import param
from gradbench.registry import estimators

from .score_function import sum_units


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """Forward value ``hard``, gradient of ``soft``."""
    return hard - soft.detach() + soft


def tau_param(doc: str = "temperature τ of the softmax"):
    return param(1.0, doc, gt=0.0)


@estimators.register
@dataclass(frozen=True)
class GumbelSoftmax(Estimator):
    """Gumbel-Softmax / Concrete (Jang et al.; Maddison et al. 2017): f(softmax((θ + G)/τ))."""

    name = "gumbel-softmax"
    unbiased = False
    differentiable_f = True
    relaxed_f = True
    tau: float = tau_param()

    def surrogate(self, dist, f, noise, state):
        y = torch.softmax((dist.logits + noise["sample"]) / self.tau, dim=-1)
        return Surrogate(sum_units(f(y)))


@estimators.register
@dataclass(frozen=True)
class STGS(Estimator):
    """Straight-through Gumbel-Softmax: f at the exact sample D, gradient through softmax((θ + G)/τ)."""

    name = "stgs"
    unbiased = False
    differentiable_f = True
    tau: float = tau_param()

    def surrogate(self, dist, f, noise, state):
        hard = dist.sample(noise["sample"])
        soft = torch.softmax((dist.logits + noise["sample"]) / self.tau, dim=-1)
        return Surrogate(sum_units(f(straight_through(hard, soft))))


@estimators.register
@dataclass(frozen=True)
class ST(Estimator):
    """Straight-through (Bengio et al. 2013): f at the exact sample D, gradient through softmax(θ/τ)."""

    name = "st"
    unbiased = False
    differentiable_f = True
    tau: float = tau_param()

    def surrogate(self, dist, f, noise, state):
        hard = dist.sample(noise["sample"])
        soft = torch.softmax(dist.logits / self.tau, dim=-1)
        return Surrogate(sum_units(f(straight_through(hard, soft))))
