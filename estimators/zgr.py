"""ZGR (Shekhovtsov, ICML 2023): the zero-temperature limit of Gumbel-Rao.

Gumbel-Rao (gr-mc) averages STGS's Jacobian over Gumbel noise conditioned on the
sample; as τ → 0 that average has a closed form, and the paper shows it is half
straight-through plus half DARN, both at the sample D (p = softmax θ, g = ∂f/∂D):

    ĝ = ½·J(p)·g + ½·gᵀ(D − p)·∇θ log p(D),      J(p) = diag(p) − ppᵀ.

One evaluation of f and one backward pass, no temperature. Its expectation equals
the exact gradient whenever f is quadratic in each variable (the same expectation
as ReinMax at τ = 1; tests/test_frontier.py checks both by enumeration).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradbench.contract import Estimator, Surrogate
from gradbench.registry import estimators

from .reinmax import logit_offset, softmax_jacobian_product
from .score_function import sum_units


@estimators.register
@dataclass(frozen=True)
class ZGR(Estimator):
    """ZGR (Shekhovtsov 2023): Gumbel-Rao at τ → 0, ½·J(p)·∂f/∂D + ½·(∂f/∂D)ᵀ(D − p)·∇log p(D). Exact for quadratic f."""

    name = "zgr"
    unbiased = False
    differentiable_f = True

    def surrogate(self, dist, f, noise, state):
        hard = dist.sample(noise["sample"])
        p = dist.probs.detach()
        log_probs = torch.log_softmax(dist.logits, dim=-1)
        # log p(D) per variable, gathered with where: −inf·0 would be nan at masked categories.
        log_p = torch.where(hard > 0, log_probs, torch.zeros_like(log_probs)).sum(-1, keepdim=True)
        straight = softmax_jacobian_product(p, logit_offset(dist.logits))
        darn = (hard - p) * (log_p - log_p.detach())
        # Value D; gradient ½·J(p)·g + ½·gᵀ(D − p)·∇log p(D) with respect to θ.
        return Surrogate(sum_units(f(hard + 0.5 * (straight + darn))))
