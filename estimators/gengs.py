"""Generalized Gumbel-Softmax (GenGS; Joo, Kim, Shin & Moon 2020) for count variables.

Truncate the support to 0..n−1 (the last bin takes the tail, or the pmf is renormalised),
draw w = softmax((log π + G)/τ) — the Gumbel-Softmax of the truncated categorical, with
log-probabilities as its logits — and map it back with the linear transform z = Σ_k k·w_k.
The hard variant forwards the exact sample of the truncated distribution and
back-propagates through w (straight-through). This is the Gumbel-Softmax (or STGS)
estimator run on the truncated categorical view, so it reuses those estimators; with the
same level it gives exactly their numbers on the task's own view.

Two sources of bias: the relaxation (vanishes as τ → 0, while the variance grows) and the
truncation (the mass P(z ≥ n) is misplaced). Both are recorded: every measurement carries
the metrics ``truncation_level`` and ``dropped_mass`` (the largest over the variables).
"""

from __future__ import annotations

from dataclasses import dataclass

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator
from gradbench.families.counts import COUNT_FAMILIES, TAILS, VIEW_EPS
from gradbench.families.categorical import Objective
from gradbench.params import param
from gradbench.registry import estimators

from .relaxed import STGS, GumbelSoftmax, tau_param


@estimators.register
@dataclass(frozen=True)
class GenGS(Estimator):
    """Generalized Gumbel-Softmax: Gumbel-Softmax over the truncated pmf, z = Σ_k k·w_k."""

    name = "gengs"
    unbiased = False
    families = COUNT_FAMILIES
    differentiable_f = True
    relaxed_f = FromParam("hard", negate=True)
    n: int | None = param(None, "truncation level: values 0..n−1 (overrides eps; capped at a finite support's size)",
                          kind="int", optional=True, ge=2)
    eps: float | None = param(None, "when n is unset: the smallest level whose dropped mass P(z ≥ n) is ≤ eps for "
                                    f"every variable (unset: {VIEW_EPS:g}, or a finite support whole)",
                              kind="float", optional=True, ge=1e-15, lt=1.0)
    tail: str = param("last-bin", "truncated mass: 'last-bin' adds it to the last value, 'renormalize' rescales "
                                  "the others", choices=TAILS)
    tau: float = tau_param()
    hard: bool = param(False, "straight-through: forward the exact sample of the truncated distribution")

    def level(self, dist) -> int:
        """The truncation level on ``dist`` (host side: call once, not per draw)."""
        return dist.truncation_level(self.n, self.eps)

    def noise(self, dist):
        return {"sample": dist.truncated_categorical(self.level(dist), self.tail).sample_noise()}

    def surrogate(self, dist, f, noise, state):
        level = noise["sample"].shape[-1]  # fixed by noise(): no host work per chunk
        relaxed = STGS(self.tau) if self.hard else GumbelSoftmax(self.tau)
        counts = Objective(lambda w: f.fn(dist.from_categorical(w)))
        return relaxed.surrogate(dist.truncated_categorical(level, self.tail), counts, noise, state)

    def diagnostics(self, dist):
        level = self.level(dist)
        return {"truncation_level": float(level), "dropped_mass": dist.tail_mass(level)}
