"""PL-RELAX (Gadetsky, Struminsky, Robinson, Quadrianto & Vetrov, AAAI 2020): RELAX for Plackett–Luce.

"Low-variance black-box gradient estimates for the Plackett-Luce distribution" carries
RELAX (Grathwohl et al. 2018; estimators/rebar.py) over to permutations. z = θ + G are
the Gumbel-perturbed log-scores, b = argsort(z) (descending) the exact sample, and z̃ ~
p(z | b) is drawn conditionally on the ordering by the exponential race: T = e^{−z} are
independent Exp(s) arrival times with s = e^θ, and given that the items arrive in the
order b, memorylessness makes the gaps independent,

    T_{b_i} = Σ_{m ≤ i} v_m / Z_m,   Z_m = Σ_{j ≥ m} s_{b_j},   v_m ~ Exp(1),

so z̃_{b_i} = −log T_{b_i} is reparameterised in θ (through Z). With a control variate c,

    ĝ = [f(b) − c(z̃)]·∇θ log p(b) + ∇θ c(z) − ∇θ c(z̃)

is unbiased for any c. Here c(z) = η·f(NeuralSort_λ(z)) + r_ρ(NeuralSort_1(z)), r_ρ a
small tanh network on the flattened relaxed matrix whose output layer starts at zero;
η, log λ and ρ are state, tuned by Adam on the single-estimate variance ‖ĝ‖² (its
gradient needs ĝ differentiated, create_graph=True), as RELAX does. The paper's own
control variate is a network of z; the η·f(relaxed sort) term is REBAR's, and lets the
estimator start useful before the network has learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.families.permutation import descending_order
from gradbench.noise import NoiseSpec
from gradbench.params import param
from gradbench.registry import estimators

from .adaptive import Trainable, mlp, mlp_params
from .neuralsort import neural_sort
from .score_function import sum_units


def conditional_scores(logits: Tensor, order: Tensor, v: Tensor) -> Tensor:
    """z̃ ~ p(θ + G | descending argsort = order) from ``v`` Exp(1), all ``[..., k]``; differentiable in θ."""
    shape = torch.broadcast_shapes(logits.shape, order.shape)
    order = order.expand(shape)
    placed = logits.expand(shape).gather(-1, order)  # θ_{b_1}, ..., θ_{b_k}
    log_rates = torch.logcumsumexp(placed.flip(-1), dim=-1).flip(-1)  # log Z_m
    log_times = torch.logcumsumexp(v.log() - log_rates, dim=-1)  # log T_{b_i}
    return torch.zeros_like(placed).scatter(-1, order, -log_times)  # back to item order


@estimators.register
@dataclass(frozen=True)
class PLRelax(Estimator):
    """PL-RELAX (Gadetsky et al. 2020): RELAX for Plackett–Luce with conditional Gumbel scores, tuned online. Unbiased."""

    name = "pl-relax"
    unbiased = True
    families = ("permutation",)
    evaluations = 3
    differentiable_f = True
    relaxed_f = True
    masks = False
    stateful = True
    eta: float = param(1.0, "initial scale η of the control variate η·f(NeuralSort_λ(z))")
    tau: float = param(0.5, "initial temperature λ of the relaxed sort in the control variate", gt=0.0)
    hidden: int = param(10, "hidden tanh units of the control-variate network r_ρ", ge=1)
    lr: float = param(0.01, "Adam learning rate of the variance-minimising updates", gt=0.0)
    adapt: bool = param(True, "tune η, λ and the network online to minimise the variance")

    def noise(self, dist):
        one = dist.sample_noise()
        return {"sample": one, "conditional": NoiseSpec("exponential", one.shape)}

    def init(self, dist, generator):
        like = dist.params.detach()
        width = math.prod(dist.batch_shape[dist.units :]) * dist.k * dist.k
        params = {"eta": torch.tensor(self.eta, dtype=like.dtype, device=like.device),
                  "log_tau": torch.tensor(math.log(self.tau), dtype=like.dtype, device=like.device),
                  **mlp_params([width, self.hidden, 1], generator, like)}
        return Trainable.create(params)

    def surrogate(self, dist, f, noise, state):
        return Surrogate(self._value(dist, f, noise, state.params, for_update=False))

    def update(self, state, dist, f, noise, out):
        if not self.adapt:
            return state
        with torch.enable_grad():
            leaves = state.leaves()
            value = self._value(dist, f, noise, leaves, for_update=True)
            (grad,) = torch.autograd.grad(value.sum(), dist.params, create_graph=True)
            second_moment = (grad * grad).sum() / grad.shape[0]
            grads = torch.autograd.grad(second_moment, list(leaves.values()), allow_unused=True)
        return state.adam(dict(zip(leaves, grads)), self.lr)

    def _control(self, dist, f, params: dict[str, Tensor], z: Tensor) -> Tensor:
        """c(z) per unit ``[n, *units]`` for scores ``z [n, *batch, k]``."""
        features = neural_sort(z, 1.0).reshape(*z.shape[: 1 + dist.units], -1)
        return params["eta"] * f(neural_sort(z, params["log_tau"].exp())) + mlp(params, features).squeeze(-1)

    def _value(self, dist, f, noise: dict[str, Tensor], params: dict[str, Tensor], for_update: bool) -> Tensor:
        logits = dist.logits
        z = dist.perturbed(noise["sample"])
        order = descending_order(z.detach())
        b = dist.sample(noise["sample"])
        z_cond = conditional_scores(logits, order, noise["conditional"])
        fb = f(b)
        c_z, c_cond = self._control(dist, f, params, z), self._control(dist, f, params, z_cond)
        if for_update:
            # The score term's coefficient must vary with η, λ, ρ but not with θ: c(z̃) at sg(θ).
            z_fixed = conditional_scores(logits.detach(), order, noise["conditional"])
            coef = fb.detach() - self._control(dist, f, params, z_fixed)
        else:
            coef = fb.detach() - c_cond.detach()
        log_p = dist.log_prob_units(b)
        correction = c_z - c_cond
        # Value f(b): the score term and the correction contribute gradient only.
        return sum_units(fb + coef * (log_p - log_p.detach()) + correction - correction.detach())
