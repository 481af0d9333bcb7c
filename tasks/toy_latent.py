"""toy-latent: a tiny latent-variable model whose single- and multi-sample bounds are exact.

N observations (units), each with one categorical latent z over K values, a fixed
table log p(x, z) and a variational q(z) = softmax(θ) per observation.

Every estimator is measured on the negative ELBO: f(z) = log q_θ₀(z) − log p(x, z)
per observation, with q at the problem's own parameters θ₀ held fixed inside f.
That is exact for the gradient at θ₀, because E_q[∇θ log q_θ(z)] = 0, so the usual
enumeration over the K^N outcomes gives the reference. The task offers importance
weights (``log_joint``): VIMCO is measured on the m-sample bound
E Σ_units −log (1/m) Σ_j p(x, z_j)/q_θ(z_j) instead, whose exact gradient
enumerates the K^m tuples of each observation (gradbench.bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.bounds import problem_for
from gradbench.contract import Problem, Task
from gradbench.families.categorical import Categorical, Objective
from gradbench.errors import SpecError
from gradbench.params import param
from gradbench.registry import tasks

# Two observations, K = 4: q favours different latents than the posterior p(z | x) ∝ exp(table),
# so neither bound is at its optimum and every gradient is far from zero.
DEFAULT_LOGITS = (0.5, -0.2, 0.1, -1.0, 0.0, 0.8, -0.5, 0.3)
DEFAULT_LOG_JOINT = (-2.0, -0.5, -3.0, -1.2, -0.7, -2.5, -1.0, -4.0)


class LatentProblem(Problem):
    """q logits θ ``[N, K]`` and log p(x, z) ``[N, K]``; one unit per observation."""

    family = "categorical"

    def __init__(self, logits: Tensor, log_joint: Tensor):
        self.logits, self.table = logits, log_joint
        cost = torch.log_softmax(logits, -1) - log_joint  # log q_θ₀(z) − log p(x, z)
        self.objective = Objective(lambda z: (z * cost).sum(-1), log_joint=lambda z: (z * log_joint).sum(-1))

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return Categorical(params["logits"], units=1)

    def for_estimator(self, estimator):
        return problem_for(self, estimator)


@tasks.register
@dataclass(frozen=True)
class ToyLatent(Task):
    """Categorical latents with a fixed joint table: negative ELBO for all, the m-sample bound for VIMCO; exact."""

    name = "toy-latent"
    families = ("categorical",)
    exact = True
    groups = ("logits",)
    offers = ("importance_weights",)
    categories: int = param(4, "latent categories K per observation", ge=2)
    logits: tuple = param(DEFAULT_LOGITS, "q's logits θ, K per observation, observation after observation",
                          kind="floats", min_len=2)
    log_joint: tuple = param(DEFAULT_LOG_JOINT, "log p(x, z), K per observation, in the same order as logits",
                             kind="floats", min_len=2)

    def __post_init__(self):
        k = self.categories
        if len(self.logits) % k:
            raise SpecError(f"toy-latent: logits has {len(self.logits)} values, not a multiple of categories={k}")
        if len(self.log_joint) != len(self.logits):
            raise SpecError(f"toy-latent: log_joint has {len(self.log_joint)} values but logits has "
                            f"{len(self.logits)}; give one per latent value of each observation")

    def problem(self, device, dtype):
        shape = (-1, self.categories)
        as_tensor = lambda v: torch.tensor(v, device=device, dtype=dtype).reshape(shape)  # noqa: E731
        return LatentProblem(as_tensor(self.logits), as_tensor(self.log_joint))
