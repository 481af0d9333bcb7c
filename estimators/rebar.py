"""REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018): relaxed control variates, unbiased.

With z the relaxed noise of the exact sample b = H(z) and z̃ ~ p(z | b) drawn
conditionally on it (reparameterised, so both depend on θ), and a control variate c,

    ĝ = [f(b) − c(z̃)]·∇θ log p(b) + ∇θ c(z) − ∇θ c(z̃)

is unbiased for any c (the last two terms correct the first in expectation).
REBAR: c(z) = η·f(σ_λ(z)). RELAX: c(z) = η·f(σ_λ(z)) + r_ρ(σ(z)), r_ρ a small tanh
network (its output layer starts at zero, so RELAX starts as REBAR). η, the
temperature λ and ρ are state, tuned by Adam on the single-estimate variance
‖ĝ‖² (its gradient needs ĝ itself differentiated, create_graph=True); the
variance is that of the gradient with respect to the distribution's own
parameters (the logits).

Relaxations. Bernoulli: z = θ + logit(1 − u) with the family's own uniform u (so
H(z) = 1[z > 0] = 1[u < σ(θ)]), σ_λ(z) = sigmoid(z/λ), and z̃ from the conditional
logistic formula below. Categorical: z = θ + G with the sample's Gumbel noise,
σ_λ(z) = softmax(z/λ), z̃ from the conditional Gumbel draw of Gumbel-Rao.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution
from gradbench.noise import NoiseSpec
from gradbench.params import param
from gradbench.registry import estimators

from .adaptive import Trainable, mlp, mlp_params
from .gumbel_rao import conditional_gumbel_logits
from .score_function import sum_units


def logistic_conditional(theta: Tensor, b: Tensor, v: Tensor) -> Tensor:
    """z̃ ~ p(z | 1[z > 0] = b) for z = θ + Logistic, from v ~ U(0, 1); differentiable in θ.

    With p = σ(θ): b = 1 takes z̃ = θ + logit(1 − p + v·p) = softplus(logit v + softplus θ) > 0,
    b = 0 takes z̃ = θ + logit(v·(1 − p)) = −softplus(−logit v + softplus(−θ)) < 0.
    """
    logit_v = torch.log(v) - torch.log1p(-v)
    above = F.softplus(logit_v + F.softplus(theta))
    below = -F.softplus(-logit_v + F.softplus(-theta))
    return torch.where(b > 0, above, below)


def _relaxations(dist: Distribution, noise: dict[str, Tensor], logits: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """z and z̃ ``[n, *batch(, K)]`` as functions of ``logits`` (which may or may not carry θ's gradient)."""
    if dist.family == "bernoulli":
        u = noise["sample"]
        return logits + torch.log1p(-u) - torch.log(u), logistic_conditional(logits, b, noise["conditional"])
    valid = torch.isfinite(logits.detach())
    # Masked categories stay at −inf; a finite stand-in keeps their (unused) backward free of inf − inf.
    safe = torch.where(valid, logits, torch.full_like(logits, torch.finfo(logits.dtype).min / 4))
    z_cond = conditional_gumbel_logits(safe, b, noise["conditional"])
    return logits + noise["sample"], torch.where(valid, z_cond, torch.full_like(z_cond, -math.inf))


def _relax(dist: Distribution, z: Tensor, tau: Tensor | float) -> Tensor:
    """σ_λ(z). Masked categories (z = −inf) are masked after the division: d(z/λ)/dλ is −z/λ², inf there."""
    if dist.family == "bernoulli":
        return torch.sigmoid(z / tau)
    valid = torch.isfinite(z.detach())
    scaled = torch.where(valid, z, torch.zeros_like(z)) / tau
    return torch.softmax(scaled.masked_fill(~valid, -math.inf), dim=-1)


def _features(dist: Distribution, z: Tensor) -> Tensor:
    """Network input per unit: σ(z) flattened over each unit's variables, ``[n, *units, F]``."""
    return _relax(dist, z, 1.0).reshape(*z.shape[: 1 + dist.units], -1)


def feature_width(dist: Distribution) -> int:
    width = math.prod(dist.batch_shape[dist.units :])
    return width * (dist.K if dist.family == "categorical" else 1)


@dataclass(frozen=True)
class _RelaxedControlVariate(Estimator):
    """Shared by REBAR and RELAX; ``network`` says whether c has the learned r_ρ term."""

    unbiased = True
    families = ("categorical", "bernoulli")
    evaluations = 3
    differentiable_f = True
    relaxed_f = True
    stateful = True
    network = False
    eta: float = param(1.0, "initial scale η of the control variate η·f(σ_λ(z))")
    tau: float = param(0.5, "initial temperature λ of the relaxation σ_λ", gt=0.0)
    lr: float = param(0.01, "Adam learning rate of the variance-minimising updates", gt=0.0)
    adapt: bool = param(True, "tune η, λ (and the network) online to minimise the variance")

    def noise(self, dist):
        one = dist.sample_noise()
        return {"sample": one, "conditional": NoiseSpec("uniform" if dist.family == "bernoulli" else "exponential",
                                                        one.shape)}

    def init(self, dist, generator):
        like = dist.params.detach()
        params = {"eta": torch.tensor(self.eta, dtype=like.dtype, device=like.device),
                  "log_tau": torch.tensor(math.log(self.tau), dtype=like.dtype, device=like.device)}
        if self.network:
            params.update(mlp_params([feature_width(dist), self.hidden, 1], generator, like))
        return Trainable.create(params)

    def surrogate(self, dist, f, noise, state):
        return Surrogate(self._value(dist, f, noise, state.params, for_update=False))

    def update(self, state, dist, f, noise, out):
        if not self.adapt:
            return state
        return state.adam(self.variance_gradient(state, dist, f, noise), self.lr)

    def variance_gradient(self, state: Trainable, dist: Distribution, f, noise: dict[str, Tensor]) -> dict[str, Tensor]:
        """∂/∂(η, log λ, ρ) of the mean over copies of ‖ĝ‖² for this noise (E ĝ does not depend on them)."""
        with torch.enable_grad():
            leaves = state.leaves()
            value = self._value(dist, f, noise, leaves, for_update=True)
            (grad,) = torch.autograd.grad(value.sum(), dist.params, create_graph=True)
            second_moment = (grad * grad).sum() / grad.shape[0]
            grads = torch.autograd.grad(second_moment, list(leaves.values()), allow_unused=True)
        return {k: g for k, g in zip(leaves, grads)}

    def _value(self, dist: Distribution, f, noise: dict[str, Tensor], params: dict[str, Tensor],
               for_update: bool) -> Tensor:
        eta, tau = params["eta"], params["log_tau"].exp()
        logits = dist.logits
        b = dist.sample(noise["sample"])
        z, z_cond = _relaxations(dist, noise, logits, b)
        fb, fz, fz_cond = f(torch.stack([b, _relax(dist, z, tau), _relax(dist, z_cond, tau)]), lead=1)
        c_z, c_cond = eta * fz, eta * fz_cond
        if self.network:
            c_z = c_z + mlp(params, _features(dist, z)).squeeze(-1)
            c_cond = c_cond + mlp(params, _features(dist, z_cond)).squeeze(-1)
        if for_update:
            # The score term's coefficient must vary with η, λ, ρ but not with θ: recompute c(z̃) at sg(θ).
            _, z_fixed = _relaxations(dist, noise, logits.detach(), b)
            coef = fb.detach() - eta * f(_relax(dist, z_fixed, tau))
            if self.network:
                coef = coef - mlp(params, _features(dist, z_fixed)).squeeze(-1)
        else:
            coef = fb.detach() - c_cond.detach()
        log_p = dist.log_prob_units(b)
        correction = c_z - c_cond
        # Value f(b): the score term and the correction contribute gradient only.
        return sum_units(fb + coef * (log_p - log_p.detach()) + correction - correction.detach())


@estimators.register
@dataclass(frozen=True)
class REBAR(_RelaxedControlVariate):
    """REBAR (Tucker et al. 2017): control variate η·f(σ_λ(z)) at conditional noise, η and λ tuned online. Unbiased."""

    name = "rebar"


@estimators.register
@dataclass(frozen=True)
class RELAX(_RelaxedControlVariate):
    """RELAX (Grathwohl et al. 2018): REBAR's control variate plus a learned network r_ρ, all tuned online. Unbiased."""

    name = "relax"
    network = True
    hidden: int = param(10, "hidden tanh units of the control-variate network r_ρ", ge=1)
