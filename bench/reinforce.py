"""REINFORCE with a leave-one-out baseline, as the core's reference estimator.

The high-sample reference (references.py) is core code, not a registry lookup: the
registered ``rloo`` estimator (estimators/score_function.py) is this class under
its registered name, so both compute the same numbers from the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .capabilities import FromParam
from .contract import Estimator, Surrogate
from .noise import NoiseSpec
from .params import param


def score_surrogate(f_value: Tensor, log_prob: Tensor, baseline: Tensor | float = 0.0) -> Tensor:
    """``f + sg(f − b)·(log p − sg(log p))``: its value is f, its gradient (f − b)·∇log p + ∇f.

    The ∇f term is the pathwise dependence of f on parameters (a VAE's decoder); it is
    zero for the distribution's own parameters because samples carry no gradient.
    """
    return f_value + (f_value - baseline).detach() * (log_prob - log_prob.detach())


def sum_units(value: Tensor) -> Tensor:
    """``[n, *units] -> [n]``: the objective is additive over units."""
    return value.reshape(value.shape[0], -1).sum(1)


@dataclass(frozen=True)
class LeaveOneOut(Estimator):
    """REINFORCE leave-one-out (Kool et al. 2019): m draws, each baselined by the mean of the others.

    The estimate is the mean over the m draws; it costs m evaluations of f.
    """

    name = "rloo"  # also seeds its (unused) state generator, so reference and estimator draw alike
    unbiased = True
    families = ("*",)
    evaluations = FromParam("m")
    m: int = param(4, "draws per estimate", ge=2)

    def noise(self, dist):
        one = dist.sample_noise()
        return {"samples": NoiseSpec(one.kind, (self.m, *one.shape))}

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["samples"])  # [m, n, ...]
        fx = f(x, lead=1)  # [m, n, *units]
        baseline = (fx.sum(0, keepdim=True) - fx) / (self.m - 1)
        value = score_surrogate(fx, dist.log_prob_units(x), baseline).mean(0)
        return Surrogate(sum_units(value))
