"""Score-function estimators: (f(x) − b)·∇log p(x), with no, moving-average or leave-one-out baselines.

They need only samples and log-probabilities, so they run on every family whose
distribution can sample from explicit noise and score a sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution
from gradbench.params import param
from gradbench.reinforce import LeaveOneOut, score_surrogate, sum_units  # noqa: F401  (re-exported)
from gradbench.registry import estimators

ANY_FAMILY = ("*",)


def per_variable(value: Tensor, dist: Distribution) -> Tensor:
    """Per-unit values ``[*lead, n, *units]`` -> ``[*lead, n, *units, 1, ...]``, broadcasting against ``[*lead, n, *batch]``."""
    return value.reshape(*value.shape, *([1] * (len(dist.batch_shape) - dist.units)))


def sum_to_units(x: Tensor, dist: Distribution, lead: int = 0) -> Tensor:
    """``[*lead, n, *batch, ...] -> [*lead, n, *units]``: sum over each unit's variables (and event axis)."""
    keep = lead + 1 + dist.units
    return x.reshape(*x.shape[:keep], -1).sum(-1)


@estimators.register
@dataclass(frozen=True)
class Reinforce(Estimator):
    """REINFORCE (score function): f(x)·∇log p(x). Unbiased, one evaluation of f."""

    name = "reinforce"
    unbiased = True
    families = ANY_FAMILY

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        return Surrogate(sum_units(score_surrogate(f(x), dist.log_prob_units(x))))


@estimators.register
@dataclass(frozen=True)
class ReinforceEMA(Estimator):
    """REINFORCE with an exponential-moving-average baseline: (f(x) − b)·∇log p(x).

    State: the baseline b (a scalar), updated as b ← decay·b + (1 − decay)·mean f after
    each step; frozen while measuring, so the estimate stays unbiased.
    """

    name = "reinforce-ema"
    unbiased = True
    families = ANY_FAMILY
    stateful = True
    decay: float = param(0.9, "moving-average decay of the baseline", ge=0.0, lt=1.0)

    def init(self, dist, generator):
        return torch.zeros((), dtype=dist.params.dtype, device=dist.params.device)

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        fx = f(x)
        return Surrogate(sum_units(score_surrogate(fx, dist.log_prob_units(x), state)), {"f": fx.detach()})

    def update(self, state, dist, f, noise, out):
        return self.decay * state + (1 - self.decay) * out.aux["f"].mean()


@estimators.register
@dataclass(frozen=True)
class RLOO(LeaveOneOut):
    """REINFORCE leave-one-out (Kool et al. 2019): m draws, each baselined by the mean of the others.

    The estimate is the mean over the m draws; it costs m evaluations of f. The core's
    high-sample reference is the same class (gradbench.reinforce), unregistered.
    """

    name = "rloo"
