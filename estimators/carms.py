"""CARMS (Dimitriev & Zhou, NeurIPS 2021): k antithetic categorical samples, leave-one-out with a copula correction.

Samples. Each categorical variable is drawn by stick-breaking over its categories in
ascending order of probability (the authors' stick-breaking construction): at position c
(sorted probabilities p_(0) ≤ … ≤ p_(K−1), tail mass S_c = Σ_{c' ≥ c} p_(c')) the draw
stops with probability π_c = p_(c)/S_c. The k draws of one variable share, at every
position, k uniforms v_1..v_k from the Dirichlet copula (v_i = (1 − d_i)^{k−1},
d ~ Dirichlet(1, …, 1) over the k draws): each draw is exact, the k are negatively
dependent. The copula's bivariate CDF is Φ(x, y) = (x^{1/(k−1)} + y^{1/(k−1)} − 1)₊^{k−1},
so the joint law of two draws is closed form: with A_a = Π_{c<a} (1 − 2π_c + Φ(π_c, π_c))
(both still running at a),

    P(z_i = a, z_j = a) = A_a·Φ(π_a, π_a),
    P(z_i = a, z_j = b) = A_a·(π_a − Φ(π_a, π_a))·p_(b)/S_{a+1}   (a < b; symmetric).

Estimator. Leave-one-out over dependent draws is biased by E[f(z_j)·s(z_i)], s(z) =
onehot(z) − p the score of the logits. Given z_j = b, E[s(z_i) | z_j = b] = h(b) =
P(·, b)/p_b − p, and h(b) = H·s(b) with H = [h(0) … h(K−1)], so E[f(z_j)·s(z_i)] =
H·∇E f and

    ĝ = (I − H)⁻¹ · Σ_i (f(z_i) − f̄)·s(z_i) / (k − 1),   f̄ = mean_j f(z_j),

per variable (a K × K solve on the sum-zero subspace, where both sides live), unbiased for
every f, k evaluations. For K = 2, H = ρ·I on that subspace and ĝ is ARMS's
Σ (f − f̄)(b − p)/((k − 1)(1 − ρ)). This is where gradbench departs from the paper: the
paper (and alekdimi/carms) weights each pair by p_a·p_b/P(z_i = a, z_j = b), which is
unbiased only where every pair of outcomes can occur together; under this copula two
draws never stop together at an early position (P(a, a) = 0 when π_a^{1/(k−1)} ≤ ½), so
with several variables (f depending on all of them, as in a VAE) that weighting is
biased. The correction above uses the same samples and the same closed-form joint law.
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


def stick_breaking(p_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """Stopping probabilities π ``[..., K]`` (last = 1) and tail masses S ``[..., K]`` of sorted probabilities."""
    tail = p_sorted.flip(-1).cumsum(-1).flip(-1)
    pi = (p_sorted / tail).clamp(max=1.0)
    pi = torch.cat([pi[..., :-1], torch.ones_like(pi[..., -1:])], -1)
    return pi, tail


def pair_law(p_sorted: Tensor, k: int) -> Tensor:
    """P(z_i = a, z_j = b) ``[..., K, K]`` in sorted positions for two of k copula-coupled draws."""
    pi, tail = stick_breaking(p_sorted)
    both_stop = torch.clamp(2 * pi ** (1.0 / (k - 1)) - 1, min=0) ** (k - 1)  # Φ(π, π)
    running = torch.cumprod(torch.cat([torch.ones_like(pi[..., :1]), (1 - 2 * pi + both_stop)[..., :-1]], -1), -1)
    # a < b: i stops at a, j goes on and then stops at b with its own conditional law p_(b)/S_{a+1}.
    next_tail = torch.cat([tail[..., 1:], torch.ones_like(tail[..., :1])], -1)
    first = running * (pi - both_stop) / next_tail  # [..., K] (a)
    upper = (first.unsqueeze(-1) * p_sorted.unsqueeze(-2)).triu(1)  # [..., a, b]
    return upper + upper.transpose(-1, -2) + torch.diag_embed(running * both_stop)


def correction(p_sorted: Tensor, k: int) -> Tensor:
    """The matrix A ``[..., K, K]`` with A·x = (I − H)·x on the sum-zero subspace, invertible there."""
    K = p_sorted.shape[-1]
    joint = pair_law(p_sorted, k)
    h = joint / p_sorted.unsqueeze(-2) - p_sorted.unsqueeze(-1)  # column b: E[s(z_i) | z_j = b]
    eye = torch.eye(K, dtype=p_sorted.dtype, device=p_sorted.device)
    project = eye - 1.0 / K
    return project @ (eye - h) @ project + 1.0 / K


@estimators.register
@dataclass(frozen=True)
class CARMS(Estimator):
    """CARMS (Dimitriev & Zhou 2021): k stick-breaking Dirichlet-copula categorical samples, leave-one-out with the exact copula correction. Unbiased, k evaluations."""

    name = "carms"
    unbiased = True
    families = ("categorical",)
    evaluations = FromParam("k")
    masks = False  # the stick order is over every category
    k: int = param(4, "antithetic samples per estimate", ge=2)

    def noise(self, dist):
        return {"copula": NoiseSpec("exponential", (self.k, *dist.batch_shape, dist.K))}

    def surrogate(self, dist, f, noise, state):
        theta = dist.params  # [n, *batch, K]
        p = torch.softmax(theta.detach(), -1)
        p_sorted, order = p.sort(-1)
        pi, _ = stick_breaking(p_sorted)
        e = noise["copula"].movedim(1, 0)  # [k, n, *batch, K]
        v = torch.exp((self.k - 1) * torch.log1p(-e / e.sum(0, keepdim=True)))  # (1 − d)^{k−1}, uniform
        stops = torch.cat([(v < pi)[..., :-1], torch.ones_like(v[..., -1:], dtype=torch.bool)], -1)
        position = stops.to(torch.uint8).argmax(-1)  # first stop: [k, n, *batch]
        onehot_sorted = torch.nn.functional.one_hot(position, p.shape[-1]).to(p.dtype)
        x = torch.zeros_like(onehot_sorted).scatter(-1, order.expand_as(onehot_sorted), onehot_sorted)
        fx = f(x, lead=1)  # [k, n, *units]
        centred = per_variable(fx - fx.mean(0, keepdim=True), dist).unsqueeze(-1)
        raw = (centred * (onehot_sorted - p_sorted)).sum(0) / (self.k - 1)  # sorted positions [n, *batch, K]
        solved = torch.linalg.solve(correction(p_sorted, self.k), raw.unsqueeze(-1)).squeeze(-1)
        grad = torch.zeros_like(solved).scatter(-1, order, solved)
        # Value mean f(z_i) (its pathwise gradient is unbiased for f's own parameters); gradient ĝ for θ.
        return Surrogate(sum_units(fx.mean(0)) + (grad.detach() * (theta - theta.detach())).reshape(theta.shape[0], -1).sum(1))
