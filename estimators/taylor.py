"""Taylor-expansion estimators: MuProp (unbiased) and DARN (biased).

Both expand f to first order around a fixed point x̄ of the relaxed domain,
b(x) = f(x̄) + ∇f(x̄)ᵀ(x − x̄), with x in its native encoding (one-hot D for a
categorical, b ∈ {0, 1} for a Bernoulli), so they need f defined and
differentiable between outcomes.

muprop (Gu et al. 2016): x̄ = μ = E[x] (the mean-field point, p or σ(θ)); b(x) is a
    baseline for the score-function term and its expectation's gradient
    ∇f(μ)ᵀ∇θμ is added back analytically: unbiased for any f.
darn (Gregor et al. 2014, as framed by Gu et al. 2016): the score-function
    estimator with f replaced by its Taylor term around the fixed x̄ = ½ (Bernoulli;
    the uniform point for a categorical, which is ½ again in the two-category view),
    ĝ = ∇f(x̄)ᵀ(x − x̄)·∇log p(x). Its mean is ∇f(x̄)ᵀ∇θμ, the gradient of the
    linearised objective, which is exact when f's Taylor remainder is the same for
    every outcome (any quadratic in a binary variable, where f(1) − f(0) = f'(½); the
    isotropic quadratic of toy-quadratic around the uniform point) and biased
    otherwise (toy-bernoulli's sine objective).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution, Objective
from gradbench.registry import estimators

from .score_function import score_surrogate, sum_to_units, sum_units

TAYLOR_FAMILIES = ("categorical", "bernoulli")


def taylor_at(f: Objective, point: Tensor) -> tuple[Tensor, Tensor]:
    """f and ∇ₓf at ``point [n, *batch(, K)]``: ``([n, *units], [n, *batch(, K)])``, both constants.

    f is additive over units and each unit's term depends only on its own
    variables, so the gradient of the sum holds each unit's own ∇f.
    """
    x0 = point.detach().requires_grad_(True)
    with torch.enable_grad():
        f0 = f(x0)
        grad = torch.autograd.grad(f0.sum(), x0, allow_unused=True)[0] if f0.requires_grad else None
    return f0.detach(), torch.zeros_like(x0) if grad is None else grad.detach()


def centre_point(dist: Distribution) -> Tensor:
    """DARN's fixed x̄: ½ per Bernoulli, uniform over the valid categories of a categorical."""
    if dist.family == "bernoulli":
        return torch.full_like(dist.params.detach(), 0.5)
    valid = torch.isfinite(dist.logits.detach()).to(dist.params.dtype)
    return valid / valid.sum(-1, keepdim=True)


class _Taylor(Estimator):
    """Shared capabilities: f at the sample and (with its gradient) at a point between outcomes."""

    families = TAYLOR_FAMILIES
    evaluations = 2
    differentiable_f = True
    relaxed_f = True


@estimators.register
@dataclass(frozen=True)
class MuProp(_Taylor):
    """MuProp (Gu et al. 2016): Taylor baseline at the mean-field point plus its analytic correction. Unbiased."""

    name = "muprop"
    unbiased = True

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        fx = f(x)
        mu = dist.probs  # μ = E[x] in the native encoding: p [n, *batch, K] or σ(θ) [n, *batch]
        f0, grad = taylor_at(f, mu)
        baseline = f0 + sum_to_units(grad * (x - mu.detach()), dist)
        # ∇f(μ)ᵀ(μ − sg μ): value 0, gradient ∇f(μ)ᵀ∇θμ = ∇θ E[b(x)].
        correction = sum_to_units(grad * (mu - mu.detach()), dist)
        return Surrogate(sum_units(score_surrogate(fx, dist.log_prob_units(x), baseline) + correction))


@estimators.register
@dataclass(frozen=True)
class DARN(_Taylor):
    """DARN (Gregor et al. 2014): score function of f's linear Taylor term at x̄ = ½. Biased unless f is quadratic."""

    name = "darn"
    unbiased = False

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        fx = f(x)
        centre = centre_point(dist)
        _, grad = taylor_at(f, centre)
        signal = sum_to_units(grad * (x - centre), dist)
        log_p = dist.log_prob_units(x)
        # Value f(x) keeps any pathwise dependence of f; the score term carries DARN's signal.
        return Surrogate(sum_units(fx + signal * (log_p - log_p.detach())))
