"""Relaxed sorts of Gumbel-perturbed Plackett–Luce scores: the shared estimator behind
NeuralSort, SoftSort and Gumbel-Sinkhorn (estimators/neuralsort.py, softsort.py,
gumbel_sinkhorn.py).

With s = θ + G (G the family's Gumbel noise, so the descending argsort of s is an exact
PL sample P), a relaxed sort maps s to a row-stochastic (or doubly stochastic) matrix
P̃_τ(s) ``[k, k]`` that tends to P as the temperature τ → 0. Soft: f(P̃_τ(s)).
Straight-through (hard): f evaluated at the exact P, gradient through P̃_τ(s). Both are
biased at every τ > 0; the relaxation's bias shrinks as τ → 0 while the gradient's
variance grows (a sharper relaxation has steeper slopes).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from torch import Tensor

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator, Surrogate
from gradbench.params import param

from .relaxed import straight_through
from .score_function import sum_units


@dataclass(frozen=True)
class RelaxedSort(Estimator):
    """f(P̃_τ(θ + G)), or f(P) with P̃_τ's gradient when ``hard``; subclasses define ``relax``."""

    unbiased = False
    families = ("permutation",)
    differentiable_f = True
    relaxed_f = FromParam("hard", negate=True)
    masks = False
    tau: float = param(1.0, "temperature τ of the relaxed sort", gt=0.0)
    hard: bool = param(False, "straight-through: f at the exact permutation, gradient through the relaxed one")

    @abstractmethod
    def relax(self, scores: Tensor) -> Tensor:
        """Relaxed permutation matrix ``[..., k, k]`` (row i ≈ one-hot of the i-th largest score)."""

    def surrogate(self, dist, f, noise, state):
        soft = self.relax(dist.perturbed(noise["sample"]))
        x = straight_through(dist.sample(noise["sample"]), soft) if self.hard else soft
        return Surrogate(sum_units(f(x)))
