"""Sum-and-sample (Liu, Regier, Tripuraneni, Jordan & McAuliffe, ICML 2019): Rao-Blackwellised REINFORCE.

For one categorical variable, let C be its k most probable categories (at the
current θ, so C is a constant) and q = Σ_{c∈C} p(c). The expectation splits into
an exact sum over C and an expectation over the rest,
E f = Σ_{c∈C} p(c)·f(c) + (1 − q)·E_{z~p(·|z∉C)} f(z), and the estimator
differentiates the sum exactly and samples the rest with the score function:

    ĝ = Σ_{c∈C} f(c)·∇p(c) + (1 − q)·f(z)·∇log p(z),      z ~ p(· | z ∉ C).

z is the Gumbel-max over the categories outside C with the sample's own Gumbel
vector (an exact draw from the restricted distribution, and z = D whenever D ∉ C).
Unbiased for every k; k = 0 is REINFORCE and k = K the exact gradient (nothing is
left to sample). Several variables: as for the unordered set estimator, each
variable's sum and sample are taken with the others held at the exact sample x,
which stays unbiased and costs k + 1 evaluations per variable, (k + 1)·D + 1 per estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradbench.capabilities import PerVariable
from gradbench.contract import Estimator, Surrogate
from gradbench.params import param
from gradbench.registry import estimators

from .score_function import sum_units
from .unordered_set import per_variable, substituted_values


@estimators.register
@dataclass(frozen=True)
class SumAndSample(Estimator):
    """Sum-and-sample (Liu et al. 2019): exact sum over the k most probable categories, one sample of the rest. Unbiased, min(k + 1, K)·D + 1 evaluations.

    Per variable, others held at the exact sample; k = K is the exact gradient, k = 0 REINFORCE.
    """

    name = "sum-and-sample"
    unbiased = True
    evaluations = PerVariable("k", extra=1, plus=1)
    masks = False  # the summed set would include probability-zero categories
    k: int = param(1, "most probable categories summed exactly per variable (capped at the number of categories)",
                   ge=0)


    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        k = min(self.k, dist.K)
        log_probs = per_variable(dist, torch.log_softmax(dist.logits, dim=-1))  # [n, *u, V, K]
        fixed = log_probs.detach()
        summed = fixed.topk(k, dim=-1).indices  # [n, *u, V, k]
        cats = summed
        if k < dist.K:
            in_c = torch.zeros_like(fixed, dtype=torch.bool).scatter_(-1, summed, True)
            scores = per_variable(dist, dist.logits.detach() + noise["sample"]).masked_fill(in_c, -math.inf)
            cats = torch.cat([summed, scores.argmax(-1, keepdim=True)], -1)  # z ~ p(· | ∉ C) last
        values = substituted_values(dist, f, x, cats)
        log_p = log_probs.gather(-1, cats)
        p = log_p.detach().exp()
        estimate = (values[..., :k] * (log_p[..., :k].exp() - p[..., :k])).sum(-1)
        if k < dist.K:
            rest = 1 - p[..., :k].sum(-1)
            estimate = estimate + rest * values[..., k] * (log_p[..., k] - log_p[..., k].detach())
        return Surrogate(sum_units(f(x)) + estimate.reshape(x.shape[0], -1).sum(1))
