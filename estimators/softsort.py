"""SoftSort (Prillo & Eisenschlos, ICML 2020) on Gumbel-perturbed PL scores.

With sort(s) the scores in decreasing order, row i of the relaxed sort is

    P̃[i, :] = softmax(−|sort(s)_i − s|/τ),

the paper's d = |·| choice. The sorted values carry gradient (torch.sort is
differentiable in its values); the argmax of row i is the i-th largest score, so
τ → 0 gives the exact PL sample when s = θ + G.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.registry import estimators

from .sorting import RelaxedSort


def soft_sort(scores: Tensor, tau: float) -> Tensor:
    """``scores [..., k] -> [..., k, k]``, row i ≈ one-hot of the i-th largest score."""
    ordered = scores.sort(dim=-1, descending=True).values
    return torch.softmax(-(ordered.unsqueeze(-1) - scores.unsqueeze(-2)).abs() / tau, dim=-1)


@estimators.register
@dataclass(frozen=True)
class SoftSort(RelaxedSort):
    """SoftSort (Prillo & Eisenschlos 2020): softmax(−|sort(s) − s|/τ) of θ + G, soft or straight-through."""

    name = "softsort"

    def relax(self, scores):
        return soft_sort(scores, self.tau)
