"""toy-blackbox: a black-box f that accepts discrete points only (the conformance check of ``relaxed_f``).

b_d ~ Bernoulli(σ(θ_d)) for d = 1..D and f(b) = sin(Σ_d w_d·b_d) with w_d = d: a
function of the outcome alone, not a sum over variables (no per-variable shortcut),
never differentiated (f sees ``b`` detached: no df/db exists), and it raises on any
input that is not 0/1, as a simulator or a combinatorial solver would. Only
estimators that declare ``relaxed_f`` and ``differentiable_f`` false fit it, so every
one of them is run on an f that rejects relaxed inputs. Categorical estimators see
the two-category view. The exact gradient enumerates the 2^D outcomes (D ≤ 12).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Problem, Task
from gradbench.errors import SpecError
from gradbench.families.categorical import Bernoulli, Objective
from gradbench.params import param
from gradbench.registry import tasks


MAX_VARIABLES = 12  # 2^12 outcomes for the exact gradient


class RelaxedInputError(ValueError):
    """f was given a point that is not an outcome."""


def blackbox(b: Tensor) -> Tensor:
    """f(b) = sin(Σ_d d·b_d) for 0/1 values ``[N, D] -> [N]``; raises on anything else."""
    b = b.detach()
    if not bool(((b == 0) | (b == 1)).all()):
        raise RelaxedInputError("toy-blackbox: f accepts 0/1 outcomes only and was given a relaxed point")
    weights = torch.arange(1, b.shape[-1] + 1, dtype=b.dtype, device=b.device)
    return torch.sin(b @ weights)


class BlackBoxProblem(Problem):
    """E_{b ~ Bernoulli(σ(θ))} f(b) for logits θ ``[D]``; f as :func:`blackbox`."""

    family = "bernoulli"

    def __init__(self, logits: Tensor):
        self.logits = logits
        self.objective = Objective(blackbox)

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return Bernoulli(params["logits"])

    def exact_gradient(self):
        # Enumeration: Σ_b p(b) f(b) over all 2^D outcomes, differentiated in θ.
        logits = self.logits.detach().clone().requires_grad_(True)
        outcomes = torch.tensor(list(itertools.product((0.0, 1.0), repeat=len(logits))),
                                dtype=logits.dtype, device=logits.device)  # [2^D, D]
        log_p = torch.distributions.Bernoulli(logits=logits).log_prob(outcomes).sum(-1)  # [2^D]
        expectation = (log_p.exp() * blackbox(outcomes)).sum()
        return {"logits": torch.autograd.grad(expectation, logits)[0]}


@tasks.register
@dataclass(frozen=True)
class ToyBlackBox(Task):
    """Bernoullis with a black-box f(b) = sin(Σ_d d·b_d) that rejects relaxed inputs; exact by enumeration."""

    name = "toy-blackbox"
    families = ("bernoulli", "categorical")
    relaxed_f = False
    differentiable_f = False
    exact = True
    groups = ("logits",)
    logits: tuple = param((0.4, -0.3, 1.1, -0.8), "logit θ_d, one per variable (D = 4 by default)", kind="floats",
                          min_len=1)

    def __post_init__(self):
        if len(self.logits) > MAX_VARIABLES:
            raise SpecError(f"toy-blackbox: {len(self.logits)} logits; the exact gradient enumerates 2^D outcomes, "
                            f"give at most {MAX_VARIABLES}")

    def problem(self, device, dtype):
        return BlackBoxProblem(torch.tensor(self.logits, device=device, dtype=dtype))
