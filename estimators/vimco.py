"""VIMCO (Mnih & Rezende 2016): leave-one-out baselines for multi-sample bounds.

Contract with the task (capability ``requires = ("importance_weights",)``): the
objective offers ``log_joint`` (log p(x, z) per unit, see
:class:`gradbench.families.categorical.Objective`), the distribution is the variational
q(z), and the problem VIMCO is measured on (``Problem.for_estimator``) is the
m-sample bound, with f a loss: per unit

    loss = −L,   L = log (1/m) Σ_j w_j,   w_j = p(x, z_j)/q(z_j),   z_1..z_m ~ q.

Its gradient with respect to q's parameters is estimated by
Σ_j (L − L_{−j})·∇log q(z_j) + Σ_j w̃_j·∇log w_j, where L_{−j} is L with w_j replaced
by the geometric mean of the other weights and w̃ the normalised weights. The
second term also carries the pathwise gradient of log p(x, z) with respect to a
model's own parameters (a decoder). Unbiased for the bound, m evaluations of
log p(x, z). m = 1 has no leave-one-out baseline, so m ≥ 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator, Surrogate
from gradbench.noise import NoiseSpec
from gradbench.params import param
from gradbench.registry import estimators

from .score_function import ANY_FAMILY, sum_units


def leave_one_out_bounds(log_w: Tensor) -> Tensor:
    """L_{−j} = log (1/m)(Σ_{i≠j} w_i + exp(mean_{i≠j} log w_i)) for ``log_w [m, ...]``; same shape.

    Σ_{i≠j} w_i comes from prefix and suffix log-cumulative sums: stable, O(m) memory.
    """
    m = log_w.shape[0]
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (m - 1)
    ninf = torch.full_like(log_w[:1], -math.inf)
    prefix = torch.cat([ninf, torch.logcumsumexp(log_w, 0)[:-1]])
    suffix = torch.cat([torch.logcumsumexp(log_w.flip(0), 0).flip(0)[1:], ninf])
    others = torch.logaddexp(prefix, suffix)
    return torch.logaddexp(others, others_mean) - math.log(m)


@estimators.register
@dataclass(frozen=True)
class VIMCO(Estimator):
    """VIMCO (Mnih & Rezende 2016): m-sample bound with leave-one-out (geometric-mean) baselines. Unbiased for the bound."""

    name = "vimco"
    unbiased = True
    families = ANY_FAMILY
    evaluations = FromParam("m")
    requires = ("importance_weights",)
    m: int = param(5, "samples in the bound (and per estimate)", ge=2)

    def noise(self, dist):
        one = dist.sample_noise()
        return {"samples": NoiseSpec(one.kind, (self.m, *one.shape))}

    def surrogate(self, dist, f, noise, state):
        z = dist.sample(noise["samples"])  # [m, n, ...]
        log_q = dist.log_prob_units(z)  # [m, n, *units]
        log_w = f.joint(z, lead=1) - log_q
        bound = torch.logsumexp(log_w, 0) - math.log(self.m)  # L [n, *units]
        signal = bound.detach() - leave_one_out_bounds(log_w.detach())
        score = (signal * (log_q - log_q.detach())).sum(0)
        return Surrogate(sum_units(-(bound + score)))
