"""ReinMax (Liu, Liu, Gao, Chen & Zhao, NeurIPS 2023): second-order (Heun) straight-through.

Straight-through is a forward-Euler step: it approximates f(D) − f(E D) by the
derivative ∂f/∂D at one end. ReinMax uses the trapezoid (Heun's method), which
averages the derivative at both ends and is exact when ∂f/∂D is linear. With
π₀ = softmax(θ), the exact sample D ~ π₀, π₁ = (softmax(θ/τ) + D)/2 and the
softmax Jacobian at a point p, J(p) = diag(p) − ppᵀ, the estimate is

    ĝ = 2·J(π₁)·∂f/∂D − ½·J(π₀)·∂f/∂D,      forward value f(D).

At τ = 1, π₁ is the midpoint (π₀ + D)/2 and the expectation of ĝ equals the
exact gradient for every f that is quadratic in each variable (the other
variables held fixed): E ĝ = ½ J(π₀)·E g + ½ E[(D − π₀)(D − π₀)ᵀ g], which is
what the trapezoid gives for the exact J(π₀)·f (tests/test_frontier.py checks
it by enumerating D). τ only moves π₁; below 1, softmax(θ/τ) sharpens towards
the mode, π₁ leaves the midpoint and the quadratic exactness is lost (the
reference package refuses τ < 1; here it runs and is measured as the biased
estimator it is). τ → ∞ takes π₁ to (uniform + D)/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.params import param
from gradbench.registry import estimators

from .score_function import sum_units


def softmax_jacobian_product(p: Tensor, v: Tensor) -> Tensor:
    """J(p)·v = p ⊙ v − p·(pᵀv) over the last axis, for a constant ``p`` and ``v [..., K]``.

    J(p) is symmetric, so the backward pass of this linear map in v is J(p) again.
    """
    return p * v - p * (p * v).sum(-1, keepdim=True)


def logit_offset(logits: Tensor) -> Tensor:
    """θ − sg(θ): value zero, gradient one; zero (not −inf − −inf) at masked categories."""
    valid = torch.isfinite(logits.detach())
    return torch.where(valid, logits - logits.detach(), torch.zeros_like(logits))


@estimators.register
@dataclass(frozen=True)
class ReinMax(Estimator):
    """ReinMax (Liu et al. 2023): Heun straight-through 2·J(π₁)·∂f/∂D − ½·J(π₀)·∂f/∂D, π₁ = (softmax(θ/τ) + D)/2.

    Exact in expectation for f quadratic in each variable at τ = 1. Below τ = 1 (which the
    reference code refuses) π₁ is no longer the midpoint and the estimator is simply biased.
    """

    name = "reinmax"
    unbiased = False
    differentiable_f = True
    tau: float = param(1.0, "temperature τ in π₁ = (softmax(θ/τ) + D)/2; 1 makes π₁ the midpoint (exact for "
                            "quadratic f); the paper uses τ ≥ 1 and its code refuses τ < 1; here τ < 1 runs, "
                            "π₁ moves towards the mode and the estimate is biased even for quadratic f", gt=0.0)

    def surrogate(self, dist, f, noise, state):
        hard = dist.sample(noise["sample"])
        logits = dist.logits
        pi0 = dist.probs.detach()
        pi1 = 0.5 * (torch.softmax(logits.detach() / self.tau, dim=-1) + hard)
        delta = logit_offset(logits)
        # Value D; gradient (2·J(π₁) − ½·J(π₀))·∂f/∂D with respect to θ.
        x = hard + 2 * softmax_jacobian_product(pi1, delta) - 0.5 * softmax_jacobian_product(pi0, delta)
        return Surrogate(sum_units(f(x)))
