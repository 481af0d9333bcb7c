"""poly: ReinMax's polynomial programming (Liu et al., NeurIPS 2023, the ``poly/`` benchmark).

D two-category variables with logits θ ``[D, 2]``; z_i = D_i[1] is 1 when variable i
takes its second category, and f(z) = mean_i |z_i − t|^p with t = 0.45. The paper
uses D = 128, p ∈ {1.5, 2, 3}, logits drawn from U(−0.01, 0.01) and trains them with
Adam (lr 1e-3, batch 64, 200 steps × 40 epochs, 10 seeds), reporting the final
training loss; the optimum is every z_i = 0, E f = t^p. f is a mean of one-variable
terms, so the exact gradient and E f come per variable, for any D:
∂/∂θ_i E f = ∂/∂θ_i [π_i1·|1 − t|^p + π_i0·t^p]/D. On the simplex f is evaluated at
the relaxed z_i = y_i[1] (differentiable for p > 1; at p = 1 it has a kink at t).
Training goes through the generic trainer of fixed tasks (gradbench.fitting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Problem, Task
from gradbench.families.categorical import Categorical, Objective
from gradbench.noise import derive_seed
from gradbench.params import param
from gradbench.registry import tasks


class PolyProblem(Problem):
    """E mean_i |z_i − t|^p for logits ``[D, 2]``, z_i the indicator of category 1."""

    family = "categorical"

    def __init__(self, logits: Tensor, target: float, power: float):
        self.logits, self.target, self.power = logits, target, power
        self.objective = Objective(lambda x: ((x[..., 1] - target).abs() ** power).mean(-1))

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return Categorical(params["logits"])

    def expectation(self, params: dict[str, Tensor]) -> Tensor:
        """Exact E f per parameter copy ``{logits: [n, D, 2]} -> [n]`` (differentiable)."""
        probs = torch.softmax(params["logits"], -1)
        one, zero = abs(1 - self.target) ** self.power, abs(self.target) ** self.power
        return (probs[..., 1] * one + probs[..., 0] * zero).mean(-1)

    def exact_gradient(self):
        logits = self.logits.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.expectation({"logits": logits[None]}).sum(), logits)
        return {"logits": grad}


@tasks.register
@dataclass(frozen=True)
class Poly(Task):
    """ReinMax's polynomial programming: D = 128 two-category variables, f = mean_i |z_i − 0.45|^p; exact per variable."""

    name = "poly"
    families = ("categorical",)
    exact = True
    groups = ("logits",)
    p: float = param(2.0, "exponent p of f = mean_i |z_i − t|^p (the paper: 1.5, 2, 3)", gt=0.0)
    dim: int = param(128, "number D of two-category variables", ge=1)
    target: float = param(0.45, "target t")
    init: float = param(0.01, "logits drawn from U(−init, init)", ge=0.0)
    seed: int = param(0, "seed of the initial logits (one training seed each)", ge=0)

    def problem(self, device, dtype):
        # Drawn on the CPU whatever the device, so a seed gives the same logits everywhere.
        generator = torch.Generator(device="cpu").manual_seed(derive_seed("poly", self.seed, self.dim))
        logits = (torch.rand(self.dim, 2, generator=generator, dtype=torch.float64, device="cpu") * 2 - 1) * self.init
        return PolyProblem(logits.to(device=device, dtype=dtype), self.target, self.p)
