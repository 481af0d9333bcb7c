"""Toy tasks with exact gradients: a categorical quadratic and independent Bernoullis.

toy-quadratic: D ~ Categorical(softmax(θ)) over K outcomes, f(D) = Σ_k (D_k − t_k)².
    On one-hot D this is 1 − 2 t_D + ‖t‖², so the exact gradient comes from the K
    outcomes; on the simplex f is a genuine quadratic, which is what relaxed
    estimators see, and why they are biased here.
toy-bernoulli: b_d ~ Bernoulli(σ(θ_d)), f(b) = Σ_d (b_d − t)², t = 0.499 by default:
    the true gradient σ'(θ)(1 − 2t) is tiny next to f, the classic case (REBAR, RELAX)
    where biased estimators get the sign wrong. ``objective='sine'`` takes
    f(b) = Σ_d sin(3(b_d − t)) instead: not quadratic on [0, 1], so a first-order Taylor
    expansion is not exact between the outcomes (DARN's bias shows; MuProp stays
    unbiased). Both objectives are sums of per-variable terms f_d, so the exact
    gradient enumerates each variable's two outcomes, whatever D (200, the binary
    VAE's latent size, included): ∂/∂θ_d E f = σ'(θ_d)·(f_d(1) − f_d(0)), computed as
    autograd of Σ_d σ_d f_d(1) + (1 − σ_d) f_d(0) and checked against full
    enumeration over the 2^D outcomes in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Problem, Task
from gradbench.families.categorical import Bernoulli, Categorical, Objective
from gradbench.errors import SpecError
from gradbench.params import param
from gradbench.registry import tasks

# Fixed defaults, K = 10: logits spread over [-1, 1.2] and a target that is a
# probability vector favouring categories the logits do not, so the gradient is
# neither tiny nor aligned with the logits.
DEFAULT_LOGITS = (1.0, 0.5, 0.2, 0.0, -0.2, -0.5, -1.0, 0.8, -0.8, 1.2)
DEFAULT_TARGET = (0.05, 0.1, 0.3, 0.05, 0.2, 0.05, 0.1, 0.05, 0.05, 0.05)


class QuadraticProblem(Problem):
    """E_{D~Cat(softmax θ)} Σ_k (D_k − t_k)² for logits θ ``[K]``, target t ``[K]``, optional mask ``[K]``."""

    family = "categorical"

    def __init__(self, logits: Tensor, target: Tensor, mask: Tensor | None):
        self.logits, self.target, self.mask = logits, target, mask
        self.objective = Objective(lambda x: ((x - target) ** 2).sum(-1))

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return Categorical(params["logits"], self.mask)


@tasks.register
@dataclass(frozen=True)
class ToyQuadratic(Task):
    """Categorical over K outcomes, f(D) = Σ_k (D_k − t_k)²; exact gradient over the K outcomes."""

    name = "toy-quadratic"
    families = ("categorical",)
    exact = True
    groups = ("logits",)
    logits: tuple = param(DEFAULT_LOGITS, "logits θ, one per category (K = 10 by default)", kind="floats", min_len=2)
    target: tuple = param(DEFAULT_TARGET, "target t, one per category", kind="floats")
    mask: tuple | None = param(None, "optional 0/1 per category; 0 makes a category impossible", kind="ints",
                               optional=True, ge=0, le=1)

    def __post_init__(self):
        k = len(self.logits)
        if len(self.target) != k:
            raise SpecError(f"toy-quadratic: target has {len(self.target)} values but logits has {k}; give one per category")
        if self.mask is not None:
            if len(self.mask) != k:
                raise SpecError(f"toy-quadratic: mask has {len(self.mask)} values but logits has {k}")
            if not any(self.mask):
                raise SpecError("toy-quadratic: mask must leave at least one category valid")

    def problem(self, device, dtype):
        as_tensor = lambda v: torch.tensor(v, device=device, dtype=dtype)  # noqa: E731
        mask = None if self.mask is None else torch.tensor(self.mask, device=device, dtype=torch.bool)
        return QuadraticProblem(as_tensor(self.logits), as_tensor(self.target), mask)


SINE_FREQUENCY = 3.0  # sin(3(b − t)) spans about ±1.5 rad over b ∈ [0, 1]: clearly S-shaped, not quadratic

# Per-variable terms f_d(b_d; t) of the factorised toy-bernoulli objectives.
BERNOULLI_OBJECTIVES = {
    "quadratic": lambda b, t: (b - t) ** 2,
    "sine": lambda b, t: torch.sin(SINE_FREQUENCY * (b - t)),
}


class BernoulliProblem(Problem):
    """E_{b_d ~ Bernoulli(σ(θ_d))} Σ_d f_d(b_d) for logits θ ``[D]``, a scalar target t and a per-variable term."""

    family = "bernoulli"

    def __init__(self, logits: Tensor, target: float, objective: str = "quadratic"):
        self.logits, self.target = logits, target
        self.term = BERNOULLI_OBJECTIVES[objective]
        self.objective = Objective(lambda b: self.term(b, target).sum(-1))

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return Bernoulli(params["logits"])

    def exact_gradient(self):
        # Per-variable enumeration: the objective is a sum of one-variable terms.
        logits = self.logits.detach().clone().requires_grad_(True)
        p, one, zero = torch.sigmoid(logits), torch.ones_like(logits), torch.zeros_like(logits)
        expectation = (p * self.term(one, self.target) + (1 - p) * self.term(zero, self.target)).sum()
        return {"logits": torch.autograd.grad(expectation, logits)[0]}


@tasks.register
@dataclass(frozen=True)
class ToyBernoulli(Task):
    """Independent Bernoullis, f(b) = Σ_d (b_d − t)² with t = 0.499 (or a sine): exact per variable, any D."""

    name = "toy-bernoulli"
    families = ("bernoulli", "categorical")
    exact = True
    groups = ("logits",)
    dim: int | None = param(None, "number of variables D (default: len(logits), or 10 for a single logit)",
                            kind="int", optional=True, ge=1)
    logits: tuple = param((0.0,), "logit θ_d: one value for every variable, or one per variable", kind="floats",
                          min_len=1)
    target: float = param(0.499, "target t in f(b) = Σ_d (b_d − t)²")
    objective: str = param("quadratic", "'quadratic': Σ_d (b_d − t)²; 'sine': Σ_d sin(3(b_d − t)), not quadratic",
                           choices=tuple(BERNOULLI_OBJECTIVES))

    def __post_init__(self):
        if self.dim is None:
            object.__setattr__(self, "dim", 10 if len(self.logits) == 1 else len(self.logits))
        if len(self.logits) not in (1, self.dim):
            raise SpecError(f"toy-bernoulli: logits has {len(self.logits)} values but dim is {self.dim}; "
                            "give one value or one per variable")

    def problem(self, device, dtype):
        logits = torch.tensor(self.logits, device=device, dtype=dtype).expand(self.dim).clone()
        return BernoulliProblem(logits, self.target, self.objective)
