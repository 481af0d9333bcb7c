"""ARMS (Dimitriev & Zhou, ICML 2021): antithetic REINFORCE with k samples, binary variables.

For each binary variable, k uniforms u_1..u_k come from the Dirichlet copula: with
d ~ Dirichlet(1, …, 1) (k exponentials normalised), u_i = 1 − (1 − d_i)^{k−1} is
uniform on (0, 1) for every i, and the k draws b_i = 1[u_i < p], p = σ(θ), are exact
samples that are negatively correlated (for p < ½ the mirrored b_i = 1[1 − u_i < p],
whose correlation is the more negative there, as in the authors' code). REINFORCE leave-one-out over dependent
samples is biased by the cross terms E[f(b_j)·(b_i − p)], which (b_i being binary)
equal ρ·E[f(b_j)·(b_j − p)], ρ the correlation of two draws of the same variable.
Dividing by (1 − ρ) removes it:

    ĝ_d = Σ_i (f(b_i) − f̄)·(b_{i,d} − p_d) / ((k − 1)·(1 − ρ_d)),   f̄ = mean_j f(b_j),

unbiased, k evaluations of f. ρ has a closed form: d_i < a with a = 1 − (1 − p)^{1/(k−1)}
is b_i = 1, and for the uniform distribution on the simplex P(d_i > x, d_j > y) =
(1 − x − y)₊^{k−1}, so P(b_i = b_j = 1) = 2p − 1 + (1 − 2a)₊^{k−1} and
ρ = (P(b_i = b_j = 1) − p²)/(p(1 − p)); mirrored, P(b_i = b_j = 1) = (2p^{1/(k−1)} − 1)₊^{k−1}. With k = 2 the copula is the antithetic pair
(u, 1 − u) and, where no variable is mirrored (every p ≥ ½), ARMS is DisARM draw for
draw (tests/test_frontier.py); mirroring some variables only pairs the joint samples
differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator, Surrogate
from gradbench.noise import NoiseSpec
from gradbench.params import param
from gradbench.registry import estimators

from .score_function import per_variable, sum_units


def dirichlet_copula(exponentials: Tensor, k: int) -> Tensor:
    """Uniforms ``[k, ...]`` from k i.i.d. Exp(1) ``[k, ...]``: u_i = 1 − (1 − d_i)^{k−1}, d = E/ΣE."""
    d = exponentials / exponentials.sum(0, keepdim=True)
    return -torch.expm1((k - 1) * torch.log1p(-d))


def copula_correlation(p: Tensor, k: int) -> Tensor:
    """Correlation of two draws of one variable under the Dirichlet copula of k uniforms:
    1[u_i < p] for p ≥ ½, the mirrored 1[1 − u_i < p] for p < ½ (see :func:`copula_samples`)."""
    a = -torch.expm1(torch.log1p(-p) / (k - 1))  # 1 − (1 − p)^{1/(k−1)}
    direct = 2 * p - 1 + torch.clamp(1 - 2 * a, min=0) ** (k - 1)
    mirrored = torch.clamp(2 * p ** (1 / (k - 1)) - 1, min=0) ** (k - 1)
    both = torch.where(p < 0.5, mirrored, direct)
    return (both - p * p) / (p * (1 - p))


def copula_samples(u: Tensor, p: Tensor) -> Tensor:
    """Exact, antithetic samples ``[k, n, *batch]`` from copula uniforms ``u`` and probabilities ``p``."""
    return torch.where(p < 0.5, (1 - u) < p, u < p).to(p.dtype)


@estimators.register
@dataclass(frozen=True)
class ARMS(Estimator):
    """ARMS (Dimitriev & Zhou 2021): k Dirichlet-copula antithetic samples, leave-one-out with correlation correction. Unbiased, k evaluations."""

    name = "arms"
    unbiased = True
    families = ("bernoulli",)
    evaluations = FromParam("k")
    masks = False  # binary variables only
    k: int = param(4, "antithetic samples per estimate (k = 2 is DisARM)", ge=2)

    def noise(self, dist):
        return {"copula": NoiseSpec("exponential", (self.k, *dist.batch_shape))}

    def surrogate(self, dist, f, noise, state):
        u = dirichlet_copula(noise["copula"].movedim(1, 0), self.k)  # [k, n, *batch]
        theta = dist.params
        p = torch.sigmoid(theta.detach())
        b = copula_samples(u, p)
        fb = f(b, lead=1)  # [k, n, *units]
        centred = per_variable(fb - fb.mean(0, keepdim=True), dist)
        grad = (centred * (b - p)).sum(0) / ((self.k - 1) * (1 - copula_correlation(p, self.k)))
        # Value mean f(b_i) (its pathwise gradient is unbiased for f's own parameters); gradient ĝ for θ.
        return Surrogate(sum_units(fb.mean(0)) + (grad.detach() * (theta - theta.detach())).reshape(theta.shape[0], -1).sum(1))
