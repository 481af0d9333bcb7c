"""Decoupled straight-through Gumbel-Softmax (Shah, Yan, Mozer & Liu 2024, arXiv 2410.13331).

ST-GS with one temperature for the forward pass and another for the backward pass.
The paper scales the logits *before* adding the Gumbel noise, softmax(θ/τ + G), not
softmax((θ + G)/τ) as Jang et al. and gradbench's ``stgs`` do (its footnote says so;
the baseline "ST-GS" in its experiments uses the same form). That is what makes the
forward temperature matter: argmax((θ + G)/τ) is the same for every τ, but
argmax(θ/τ_f + G) is an exact sample of Categorical(softmax(θ/τ_f)), so τ_f tempers
the distribution the forward pass samples from (the paper's "exploration"). With one
Gumbel vector G shared by both passes:

    forward  D_f = one_hot(argmax(θ/τ_f + G))          f is evaluated at D_f
    backward y_b = softmax(θ/τ_b + G)                  gradient J_θ(y_b)ᵀ·∂f/∂D at D_f
    value    D_f − sg(y_b) + y_b

Reductions (tests/test_decoupled_st.py, draw for draw on the same noise):
τ_f = τ_b = 1 is ``stgs`` (τ = 1); τ_f = τ_b = τ is (1/τ)·``stgs``(τ = 1) on the
logits θ/τ, i.e. the paper's single-temperature ST-GS is plain STGS on tempered logits.
For τ_f ≠ 1 the forward samples do not follow p = softmax(θ), so against the task's
exact gradient ∇θ E_p f the estimate carries the forward tempering as bias on top of
the straight-through bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import one_hot_argmax
from gradbench.params import param
from gradbench.registry import estimators

from .relaxed import straight_through
from .score_function import sum_units


@estimators.register
@dataclass(frozen=True)
class DecoupledST(Estimator):
    """Decoupled ST-GS (Shah et al. 2024): f at one_hot(argmax(θ/τ_f + G)), gradient through softmax(θ/τ_b + G).

    The logits are divided before the noise is added (the paper's form), so τ_f sets the
    distribution sampled in the forward pass, softmax(θ/τ_f): only τ_f = 1 samples the
    task's own p. τ_f = τ_b = 1 is ``stgs``.
    """

    name = "decoupled-st"
    unbiased = False
    differentiable_f = True
    # The paper gives no task-independent default: its best (τ_f, τ_b) come from a grid search per
    # task and lie on different sides of the diagonal for different tasks (docs/frontier.md). At
    # (1, 1) the estimator is exactly stgs(τ = 1); every other pair is an explicit choice.
    tau_f: float = param(1.0, "forward temperature: the forward pass samples D_f ~ softmax(θ/τ_f) as "
                              "argmax(θ/τ_f + G); 1 samples the task's own p", gt=0.0)
    tau_b: float = param(1.0, "backward temperature: the gradient flows through softmax(θ/τ_b + G), "
                              "same Gumbel G as the forward pass", gt=0.0)

    def surrogate(self, dist, f, noise, state):
        """logits θ ``[n, *batch, K]`` (−inf where masked), Gumbel noise ``[n, *batch, K]`` -> value ``[n]``."""
        gumbel = noise["sample"]
        # −inf/τ stays −inf, so masked categories are never sampled and get no gradient.
        hard = one_hot_argmax(dist.logits.detach() / self.tau_f + gumbel)
        soft = torch.softmax(dist.logits / self.tau_b + gumbel, dim=-1)
        return Surrogate(sum_units(f(straight_through(hard, soft))))
