"""NeuralSort (Grover, Wang, Zweig & Ermon, ICLR 2019) on Gumbel-perturbed PL scores.

For scores s ``[k]`` and A_s[j, l] = |s_j − s_l|, row i (from 1) of the relaxed sort is

    P̃[i, :] = softmax(((k + 1 − 2i)·s − A_s·1)/τ),

a unimodal row-stochastic matrix whose row-wise argmax is the descending sort of s
(the paper's Corollary 3), so τ → 0 gives the exact PL sample when s = θ + G (the
paper's stochastic NeuralSort).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.registry import estimators

from .sorting import RelaxedSort


def neural_sort(scores: Tensor, tau: float) -> Tensor:
    """``scores [..., k] -> [..., k, k]``, row i ≈ one-hot of the i-th largest score."""
    k = scores.shape[-1]
    spread = (scores.unsqueeze(-1) - scores.unsqueeze(-2)).abs().sum(-1)  # A_s·1: [..., k]
    scale = k + 1 - 2 * torch.arange(1, k + 1, dtype=scores.dtype, device=scores.device)  # [k]
    logits = scale.unsqueeze(-1) * scores.unsqueeze(-2) - spread.unsqueeze(-2)  # [..., k(rows), k]
    return torch.softmax(logits / tau, dim=-1)


@estimators.register
@dataclass(frozen=True)
class NeuralSort(RelaxedSort):
    """NeuralSort (Grover et al. 2019): unimodal relaxed sort of θ + G at temperature τ, soft or straight-through."""

    name = "neuralsort"

    def relax(self, scores):
        return neural_sort(scores, self.tau)
