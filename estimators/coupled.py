"""Coupled categorical DisARM (Dong, Mnih & Tucker, NeurIPS 2021): a categorical variable as binary decisions.

A categorical variable over K categories is a walk down a binary tree with K − 1 internal
nodes: node n sends the walk right with probability σ(φ_n), φ_n = LSE(θ_R(n)) − LSE(θ_L(n))
(R(n), L(n) the categories below its right and left child), which gives exactly p =
softmax(θ). One uniform per node, u_n, gives the binaries b_n = 1[u_n < σ(φ_n)] of one
sample and the antithetic b̃_n = 1[1 − u_n < σ(φ_n)] of another; z and z̃ are the leaves the
two walks reach. Two trees, as in the authors' code (google-research, coupled estimators):
the chain (stick-breaking: node i stops at category i, R = {i}, L = {i + 1, …}) and the
balanced tree (halving the categories at every level).

disarm-sb / disarm-tree: binary DisARM on the node binaries, Rao-Blackwellised. Per node,
with Δ = f(z) − f(z̃):

    on both walks:      ½·Δ·(−1)^{b̃_n}·1[b_n ≠ b̃_n]·σ(|φ_n|)   (DisARM)
    on z's walk only:   ½·Δ·(b_n − σ(φ_n))                      (REINFORCE, f(z̃) the baseline)
    on z̃'s walk only:  −½·Δ·(b̃_n − σ(φ_n))
    on neither:         0

is an unbiased estimate of ∂E f/∂φ_n (whether a node is on a walk depends only on its
ancestors' uniforms, never its own), chained to θ by autograd through φ(θ).

disarm-iw: the importance-sampling view. For any coupling P(z, z̃) with marginals p,

    ĝ = ½·w·Δ·(onehot(z) − onehot(z̃)),   w = p(z)·p(z̃)/P(z, z̃),

is unbiased when every pair of distinct categories can occur together. Under the
antithetic stick-breaking coupling the walks part at a = min(z, z̃) after both passed
every earlier node: w = Π_{i<a} (1 − σ_i)²/(1 − 2σ_i) · σ(|φ_a|). That needs σ_i < ½
before the last node, which the stick order in ascending probability guarantees
(σ_i ≤ 1/(K − i)), so disarm-iw always sorts. The authors' code calls it unsorted, which
misses pairs (and is biased) once some σ_i ≥ ½ early in the stick: :func:`iw_gradient`
with ``order="none"`` shows it (tests/test_coupled.py).

With K = 2 all three are binary DisARM draw for draw. Two evaluations of f each.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution, Objective
from gradbench.noise import NoiseSpec
from gradbench.params import param
from gradbench.registry import estimators

from .score_function import per_variable, sum_units

ORDERS = ("none", "ascending", "descending")


@lru_cache(maxsize=None)
def _tree(K: int, shape: str) -> tuple[Tensor, Tensor]:
    """Right and left leaf sets ``[K − 1, K]`` (bool, CPU) of the internal nodes, in breadth-first order."""
    right = torch.zeros(K - 1, K, dtype=torch.bool, device="cpu")  # cached once per (K, shape), moved by tree()
    left = torch.zeros(K - 1, K, dtype=torch.bool, device="cpu")
    if shape == "chain":
        for i in range(K - 1):
            right[i, i], left[i, i + 1:] = True, True
        return right, left
    ranges, n = [(0, K)], 0
    while ranges:
        lo, hi = ranges.pop(0)
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2  # for K a power of 2, the authors' halving
        left[n, lo:mid], right[n, mid:hi] = True, True
        ranges += [(lo, mid), (mid, hi)]
        n += 1
    return right, left


def tree(K: int, shape: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(right, left)`` leaf sets ``[K − 1, K]`` of the tree's nodes on ``device``."""
    right, left = _tree(K, shape)
    return right.to(device), left.to(device)


def ordering(p: Tensor, order: str) -> Tensor:
    """Leaf order ``[..., K]``: the category at each leaf position (stable, so ties are reproducible)."""
    if order == "none":
        return torch.arange(p.shape[-1], device=p.device).expand(p.shape)
    return p.sort(dim=-1, descending=order == "descending", stable=True).indices


def node_logits(dist: Distribution, leaves: Tensor, right: Tensor, left: Tensor) -> Tensor:
    """φ ``[n, *batch, K − 1]`` (differentiable in the logits) for leaf order ``leaves [n, *batch, K]``."""
    theta = dist.params
    mask = getattr(dist, "mask", None)
    if mask is not None:  # a finite floor instead of −inf: no NaN gradients from all-masked subtrees
        theta = torch.where(mask, theta, torch.full_like(theta, torch.finfo(theta.dtype).min / 4))
    theta = theta.gather(-1, leaves)
    # Subtree masses by a matmul (O(K) memory, not a [K − 1, K] copy per variable and estimate); φ is
    # shift-invariant, so the max is a constant. A mass that underflows is floored, its gradient zero.
    e = torch.exp(theta - theta.detach().amax(-1, keepdim=True))
    tiny = torch.finfo(theta.dtype).tiny
    mass = lambda s: torch.log((e @ s.T.to(e.dtype)).clamp(min=tiny))  # noqa: E731
    return mass(right) - mass(left)


def walk(b: Tensor, right: Tensor, left: Tensor) -> tuple[Tensor, Tensor]:
    """Leaf position ``[...]`` and walk mask ``[..., K − 1]`` (nodes passed) from node binaries ``b [..., K − 1]``."""
    on_path = (right | left).T  # [K, K − 1]: nodes above each leaf
    direction = (right.T.to(b.dtype) - left.T.to(b.dtype))  # +1 right, −1 left, 0 off the path
    agree = b @ direction.T + left.T.to(b.dtype).sum(-1)  # nodes whose binary leads to each leaf
    leaf = (agree == on_path.sum(-1).to(b.dtype)).to(torch.uint8).argmax(-1)
    return leaf, on_path[leaf]


def _one_hot(leaf: Tensor, leaves: Tensor, dtype: torch.dtype) -> Tensor:
    """One-hot ``[..., K]`` in the original category order of leaf positions ``leaf``."""
    onehot = torch.nn.functional.one_hot(leaf, leaves.shape[-1]).to(dtype)
    return torch.zeros_like(onehot).scatter(-1, leaves, onehot)


def antithetic_pair(dist: Distribution, f: Objective, u: Tensor, shape: str, order: str):
    """Both walks from node uniforms ``u [n, *batch, K − 1]``.

    Returns φ ``[n, *batch, K − 1]`` (differentiable), binaries b, b̃ and walk masks
    ``[n, *batch, K − 1]``, leaf positions ``[n, *batch]``, one-hots x, x̃ ``[n, *batch, K]``,
    f(x), f(x̃) ``[n, *units]``.
    """
    p = torch.softmax(dist.logits.detach(), -1)
    leaves = ordering(p, order)
    right, left = tree(dist.K, shape, p.device)
    phi = node_logits(dist, leaves, right, left)
    sigma = torch.sigmoid(phi.detach())
    b, b_anti = (u < sigma).to(p.dtype), ((1 - u) < sigma).to(p.dtype)
    (leaf, on), (leaf_anti, on_anti) = walk(b, right, left), walk(b_anti, right, left)
    x, x_anti = _one_hot(leaf, leaves, p.dtype), _one_hot(leaf_anti, leaves, p.dtype)
    fx, fx_anti = f(torch.stack([x, x_anti]), lead=1)
    return phi, (b, b_anti), (on, on_anti), (leaf, leaf_anti), (x, x_anti), (fx, fx_anti)


def node_gradient(phi: Tensor, b: Tensor, b_anti: Tensor, on: Tensor, on_anti: Tensor, delta: Tensor) -> Tensor:
    """Rao-Blackwellised DisARM estimate of ∂E f/∂φ ``[n, *batch, K − 1]``; ``delta`` = f(z) − f(z̃) per variable."""
    phi = phi.detach()
    sigma = torch.sigmoid(phi)
    disarm = (b != b_anti).to(phi.dtype) * (1 - 2 * b_anti) * torch.sigmoid(phi.abs())
    only, only_anti = on & ~on_anti, on_anti & ~on
    per_node = torch.where(on & on_anti, disarm, torch.zeros_like(phi))
    per_node = per_node + only * (b - sigma) - only_anti * (b_anti - sigma)
    return 0.5 * delta.unsqueeze(-1) * per_node


def iw_weight(phi: Tensor, leaf: Tensor, leaf_anti: Tensor) -> Tensor:
    """w = p(z)p(z̃)/P(z, z̃) ``[...]`` under the antithetic stick-breaking coupling (only where z ≠ z̃).

    phi ``[..., K − 1]``: stick logits; leaf, leaf_anti ``[...]``: stick positions.
    """
    parted = torch.minimum(leaf, leaf_anti)  # the node where the walks part
    before = torch.arange(phi.shape[-1], device=phi.device) < parted.unsqueeze(-1)
    both_zero = (-torch.tanh(phi / 2)).clamp(min=torch.finfo(phi.dtype).tiny)  # 1 − 2σ, > 0 where sampled
    log_ratio = 2 * torch.nn.functional.logsigmoid(-phi) - torch.log(both_zero)  # (1 − σ)²/(1 − 2σ)
    log_w = (log_ratio * before).sum(-1)
    split = phi.gather(-1, parted.clamp(max=phi.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
    return torch.exp(log_w + torch.nn.functional.logsigmoid(split.abs()))


def iw_gradient(dist: Distribution, f: Objective, u: Tensor, order: str = "ascending") -> tuple[Tensor, Tensor]:
    """ĝ ``[n, *batch, K]`` for the logits and the value ½(f(x) + f(x̃)) ``[n, *units]``.

    ``order="ascending"`` is disarm-iw; any other order can miss pairs (biased; for tests).
    """
    phi, _, _, (leaf, leaf_anti), (x, x_anti), (fx, fx_anti) = antithetic_pair(dist, f, u, "chain", order)
    w = torch.where(leaf != leaf_anti, iw_weight(phi.detach(), leaf, leaf_anti), torch.zeros_like(phi[..., 0]))
    delta = per_variable(fx - fx_anti, dist)
    return 0.5 * (w * delta).unsqueeze(-1) * (x - x_anti), 0.5 * (fx + fx_anti)


class _Coupled(Estimator):
    """Shared: one uniform per tree node, two evaluations of f, unbiased, masks handled (probability-zero leaves)."""

    unbiased = True
    families = ("categorical",)
    evaluations = 2

    def noise(self, dist):
        # The same name and shape for all three: they share draws in one run (common random numbers).
        return {"nodes": NoiseSpec("uniform", (*dist.batch_shape, dist.K - 1))}


class _OnTree(_Coupled):
    shape = "chain"
    order = "none"

    def surrogate(self, dist, f, noise, state):
        phi, (b, b_anti), (on, on_anti), _, _, (fx, fx_anti) = antithetic_pair(
            dist, f, noise["nodes"], self.shape, self.order)
        grad = node_gradient(phi, b, b_anti, on, on_anti, per_variable(fx - fx_anti, dist))
        # Value ½(f(x) + f(x̃)) (pathwise-unbiased for f's own parameters); ĝ for φ, chained to θ by autograd.
        return Surrogate(sum_units(0.5 * (fx + fx_anti)) + (grad.detach() * phi).reshape(phi.shape[0], -1).sum(1))


@estimators.register
@dataclass(frozen=True)
class DisARMSB(_OnTree):
    """DisARM-SB (Dong, Mnih & Tucker 2021): stick-breaking binaries, antithetic, Rao-Blackwellised. Unbiased, 2 evaluations."""

    name = "disarm-sb"
    order: str = param("none", "stick order of the categories: as given, or by ascending/descending probability",
                       choices=ORDERS)


@estimators.register
@dataclass(frozen=True)
class DisARMTree(_OnTree):
    """DisARM-Tree (Dong, Mnih & Tucker 2021): balanced binary tree of binaries, antithetic, Rao-Blackwellised. Unbiased, 2 evaluations."""

    name = "disarm-tree"
    shape = "balanced"


@estimators.register
@dataclass(frozen=True)
class DisARMIW(_Coupled):
    """Importance-weighted coupled DisARM (Dong, Mnih & Tucker 2021) under the ascending stick-breaking coupling. Unbiased, 2 evaluations."""

    name = "disarm-iw"

    def surrogate(self, dist, f, noise, state):
        grad, value = iw_gradient(dist, f, noise["nodes"])
        theta = dist.params
        return Surrogate(sum_units(value) + (grad.detach() * theta).reshape(theta.shape[0], -1).sum(1))
