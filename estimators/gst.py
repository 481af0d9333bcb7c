"""Gapped Straight-Through (Fan et al., ICML 2022): straight-through without resampling.

With θ₀ = sg(θ) and the exact sample D, the logits are moved deterministically so
that the sampled one is the maximum and every other one sits at least a gap g
below it, then relaxed: h = softmax((θ + m₁ − m₂)/τ). Hard: D − sg(h) + h; soft: h.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator, Surrogate
from gradbench.params import param
from gradbench.registry import estimators

from .relaxed import straight_through, tau_param
from .score_function import sum_units


def adaptive_gap(probs: Tensor, hard: Tensor) -> Tensor:
    """g = −log(1 − p_D)/p_D for the sampled category's probability p_D; ``[..., 1]``.

    It is 1 for p_D → 0 and grows without bound as p_D → 1, so p_D is kept below
    1 − eps (a variable with a single valid category has zero gradient anyway).
    """
    eps = torch.finfo(probs.dtype).eps
    p = (probs * hard).sum(-1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny, max=1 - eps)
    return -torch.log1p(-p) / p


def gapped_logits(logits: Tensor, hard: Tensor, gap: Tensor | float) -> Tensor:
    """θ + m₁ − m₂ with m₁ = (max θ₀ − θ₀_D)·D and m₂ = relu(θ₀ + g − max θ₀)·(1 − D).

    logits: ``[n, *batch, K]`` (-inf where masked). hard: one-hot ``[n, *batch, K]``.
    """
    fixed = logits.detach()
    top = fixed.max(dim=-1, keepdim=True).values
    # Gather θ₀_D with where, not θ₀·D, which would be -inf·0 = nan for masked categories.
    chosen = torch.where(hard > 0, fixed, torch.zeros_like(fixed)).sum(-1, keepdim=True)
    lift = (top - chosen) * hard
    push = torch.relu(fixed + gap - top) * (1 - hard)
    return logits + lift - push


@estimators.register
@dataclass(frozen=True)
class GST(Estimator):
    """Gapped straight-through (GST-g): deterministic gapped logits around the sample, no resampling."""

    name = "gst"
    unbiased = False
    differentiable_f = True
    relaxed_f = FromParam("hard", negate=True)
    gap: float = param(1.0, "gap g between the sampled logit and the others, or 'p' for the adaptive "
                            "gap −log(1 − p_D)/p_D", kind="float", ge=0.0, choices=("p",))
    tau: float = tau_param()
    hard: bool = param(True, "straight-through output D − sg(h) + h (else the soft h)")

    def surrogate(self, dist, f, noise, state):
        hard = dist.sample(noise["sample"])
        gap = adaptive_gap(dist.probs.detach(), hard) if self.gap == "p" else self.gap
        soft = torch.softmax(gapped_logits(dist.logits, hard, gap) / self.tau, dim=-1)
        return Surrogate(sum_units(f(straight_through(hard, soft) if self.hard else soft)))
