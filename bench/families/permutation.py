"""Permutations: the Plackett–Luce distribution over the k! orderings of k items.

Parameters are log-scores θ ``[n, *batch, k]`` (scores s = exp θ). A permutation z lists
the items from first to last; its PL probability is the sequential choice

    p(z) = ∏_i s_{z_i} / (Σ_{j ≥ i} s_{z_j}),

so log p(z) = Σ_i θ_{z_i} − Σ_i logsumexp_{j ≥ i} θ_{z_j}, the second sum one reversed
``logcumsumexp``. Sampling is the Gumbel reparameterisation (Yellott 1977; Gumbel-top-k):
the descending argsort of θ + G, G i.i.d. Gumbel(0, 1), is an exact PL sample, so the
noise is explicit and estimators that ask for it share draws (common random numbers),
as for categoricals.

Values are permutation matrices ``P [k, k]`` with P[i, j] = 1 when item j is at
position i (row i is the one-hot of z_i), the convention of NeuralSort and SoftSort,
whose relaxations are row-stochastic matrices of the same shape; ``indices`` and
``permutation_matrix`` convert. The support, all k! matrices, is enumerated for exact
references up to MAX_ENUMERATED_ITEMS items.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from .categorical import Distribution, _lead_to_front
from ..noise import NoiseSpec

# 9! = 362,880 matrices of 81 entries (235 MB in float64) still fit the reference's 2^20
# configurations; 10! = 3.6M does not, so support() declines beyond this.
MAX_ENUMERATED_ITEMS = 9


def permutation_matrix(order: Tensor, dtype: torch.dtype) -> Tensor:
    """Indices ``[..., k]`` (item at each position) -> matrices ``[..., k, k]``, P[i, order_i] = 1."""
    return F.one_hot(order, order.shape[-1]).to(dtype)


def indices(x: Tensor) -> Tensor:
    """Permutation matrices ``[..., k, k]`` -> indices ``[..., k]``: the item at each position."""
    return x.argmax(dim=-1)


def descending_order(scores: Tensor) -> Tensor:
    """Items by decreasing score ``[..., k] -> [..., k]`` (the PL sample when scores are θ + G)."""
    return scores.argsort(dim=-1, descending=True)


def all_orders(k: int, device=None) -> Tensor:
    """All k! orderings ``[k!, k]`` in lexicographic order."""
    return torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long, device=device).reshape(-1, k)


def pl_log_prob(logits: Tensor, order: Tensor) -> Tensor:
    """log p(order) under PL with log-scores ``logits [..., k]`` for ``order [..., k]`` -> ``[...]``."""
    shape = torch.broadcast_shapes(logits.shape, order.shape)
    chosen = logits.expand(shape).gather(-1, order.expand(shape))  # θ_{z_1}, ..., θ_{z_k}
    # logsumexp of θ over the items not yet placed: a cumulative logsumexp from the last position.
    remaining = torch.logcumsumexp(chosen.flip(-1), dim=-1).flip(-1)
    return (chosen - remaining).sum(-1)


class PlackettLuce(Distribution):
    """Plackett–Luce permutations of k items; samples are permutation matrices ``[..., k, k]``.

    logits: log-scores θ ``[n, *batch, k]``.
    """

    family = "permutation"

    def __init__(self, logits: Tensor, units: int = 0):
        self.params = logits
        self.logits = logits
        self.units = units

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.logits.shape[1:-1])

    @property
    def k(self) -> int:
        return self.logits.shape[-1]

    def sample_noise(self) -> NoiseSpec:
        return NoiseSpec("gumbel", (*self.batch_shape, self.k))

    def perturbed(self, noise: Tensor) -> Tensor:
        """Gumbel-perturbed log-scores θ + G ``[*lead, n, *batch, k]`` (differentiable in θ)."""
        return self.logits + _lead_to_front(noise, self.logits)

    def sample(self, noise: Tensor) -> Tensor:
        order = descending_order(self.logits.detach() + _lead_to_front(noise, self.logits))
        return permutation_matrix(order, self.logits.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        return pl_log_prob(self.logits, indices(x))

    def support(self) -> Tensor | None:
        """All k! permutation matrices ``[k!, k, k]``, or None beyond MAX_ENUMERATED_ITEMS items."""
        if self.k > MAX_ENUMERATED_ITEMS:
            return None
        return permutation_matrix(all_orders(self.k, self.logits.device), self.logits.dtype)
