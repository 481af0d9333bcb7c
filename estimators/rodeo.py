"""RODEO (Shi, Zhou, Hwang, Titsias & Mackey, NeurIPS 2022): discrete Stein operators as control variates.

Binary variables, k samples b_1..b_k ~ Bernoulli(p), p = σ(θ). For a product
distribution the Gibbs Stein operator
    (A h)(x) = Σ_d q(x̄_d)·(h(x^{(d)}) − h(x)),
x^{(d)} being x with variable d flipped and q(x̄_d) the probability of the flipped value,
has E_q[A h] = 0 for every h (pair x with x^{(d)}). RODEO builds two control variates
from one learned surrogate h = (h₀, h₁) per sample i, whose inputs never depend on b_i
itself: a linearisation of f from the other samples' gradients,
ℓ_i(y) = ḡ_{−i}ᵀy − Σ_{j≠i} ∇_b f(b_j)ᵀb_j, and the other samples' mean value f̄_{−i}
(the authors' "avg" features). With D variables per unit,

    S_i = (1/D)·(A h₀)(b_i)                       (a scalar: a baseline correction)
    V_i = (1/D)·(A [h₁·(y − p)])(b_i)             (a vector: a direct control variate)
    ĝ = (1/k)·Σ_i [(f(b_i) − mean_{j≠i}(f(b_j) + α·S_j))·(b_i − p) + β·V_i].

Each S_j and V_i has mean zero given everything but its own b, so ĝ is unbiased for
any α, β and network. α and β (starting at 0, where ĝ is leave-one-out REINFORCE)
and the network h: (ℓ, f̄) ↦ 2 outputs (one hidden layer, LeakyReLU 0.3, as the
authors' SteinControlNNSingleLayer) are state, tuned by Adam to minimise ‖ĝ‖² (the
authors' "hyper" learning rate 1e-3). The neighbours' features have a closed form,
ℓ(x^{(d)}) = ℓ(x) + ḡ_{−i,d}(1 − 2x_d), so the operator costs network passes, not
evaluations of f: k evaluations of f and one backward pass through f per estimate.
The authors run K = 2 with these features and K > 2 with the network output averaged
over the other samples one by one ("output_avg"); only the former is implemented here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution, Objective
from gradbench.noise import NoiseSpec
from gradbench.params import param
from gradbench.registry import estimators

from .adaptive import Trainable
from .score_function import per_variable, sum_to_units, sum_units


def stein_inputs(dist: Distribution, f: Objective, u: Tensor, k: int) -> tuple[dict[str, Tensor], Tensor]:
    """Everything ĝ needs apart from the learned parts (all constants), and f(b_i) ``[k, n, *units]``."""
    p = torch.sigmoid(dist.params.detach())
    b = (u < p).to(p.dtype).requires_grad_(True)
    with torch.enable_grad():
        fb = f(b, lead=1)
        (grad_b,) = torch.autograd.grad(fb.sum(), b, retain_graph=True)
    b, fv = b.detach(), fb.detach()
    loo = lambda t: (t.sum(0, keepdim=True) - t) / (k - 1)  # noqa: E731 - mean over the other samples
    coef = loo(grad_b)  # ḡ_{−i}: [k, n, *batch]
    own = sum_to_units(grad_b * b, dist, lead=1)
    offset = own.sum(0, keepdim=True) - own  # Σ_{j≠i} ∇f(b_j)ᵀb_j, per unit
    feature = sum_to_units(coef * b, dist, lead=1) - offset  # ℓ_i(b_i): [k, n, *units]
    return {
        "p": p, "b": b, "f": fv, "f_others": loo(fv),
        "feature": feature,
        "feature_flipped": per_variable(feature, dist) + coef * (1 - 2 * b),  # ℓ_i(b_i^{(d)}): [k, n, *batch]
        "flip_prob": p * (1 - b) + (1 - p) * b,  # q of the flipped value
        "variables": torch.tensor(math.prod(dist.batch_shape[dist.units:]), dtype=p.dtype, device=p.device),
    }, fb


def surrogate_net(params: dict[str, Tensor], feature: Tensor, context: Tensor) -> Tensor:
    """h(ℓ, f̄) ``[...] -> [..., 2]``: one hidden layer (LeakyReLU 0.3) on the two scalar inputs."""
    hidden = feature[..., None] * params["wx"] + context[..., None] * params["wz"] + params["b1"]
    return F.leaky_relu(hidden, 0.3) @ params["w2"] + params["b2"]


def stein_estimate(x: dict[str, Tensor], params: dict[str, Tensor], dist: Distribution) -> Tensor:
    """ĝ ``[n, *batch]`` (differentiable in ``params``)."""
    b, p, w = x["b"], x["p"], x["flip_prob"]
    h_x = surrogate_net(params, x["feature"], x["f_others"])  # [k, n, *units, 2]
    h_flip = surrogate_net(params, x["feature_flipped"], per_variable(x["f_others"], dist).expand_as(b))
    # S_i = (1/D) Σ_d q(x̄_d)(h₀(x^{(d)}) − h₀(x)), per unit.
    jump0 = w * (h_flip[..., 0] - per_variable(h_x[..., 0], dist))
    stein0 = sum_to_units(jump0, dist, lead=1) / x["variables"]
    # V_i,d = (1/D)[Σ_{d'} q(x̄_d')(h₁(x^{(d')}) − h₁(x))·(x_d − p_d) + q(x̄_d)·h₁(x^{(d)})·(1 − 2x_d)].
    jump1 = w * (h_flip[..., 1] - per_variable(h_x[..., 1], dist))
    score = b - p
    stein1 = (per_variable(sum_to_units(jump1, dist, lead=1), dist) * score
              + w * h_flip[..., 1] * (1 - 2 * b)) / x["variables"]
    k = b.shape[0]
    corrected = x["f"] + params["alpha"] * stein0
    baseline = (corrected.sum(0, keepdim=True) - corrected) / (k - 1)
    signal = per_variable(x["f"] - baseline, dist)
    return (signal * score + params["beta"] * stein1).mean(0)


@estimators.register
@dataclass(frozen=True)
class RODEO(Estimator):
    """RODEO (Shi et al. 2022): leave-one-out REINFORCE with discrete-Stein control variates from a learned surrogate. Unbiased, k evaluations."""

    name = "rodeo"
    unbiased = True
    families = ("bernoulli",)
    evaluations = FromParam("k")
    differentiable_f = True
    masks = False  # binary variables only
    stateful = True
    k: int = param(2, "samples per estimate (the paper: 2 and 3)", ge=2)
    hidden: int = param(100, "hidden units of the surrogate network (the authors': 100)", ge=1)
    lr: float = param(1e-3, "Adam learning rate of α, β and the network, which minimise ‖ĝ‖²", gt=0.0)
    adapt: bool = param(True, "tune α, β and the network online (else α = β = 0: leave-one-out REINFORCE)")

    def noise(self, dist):
        return {"samples": NoiseSpec("uniform", (self.k, *dist.batch_shape))}

    def init(self, dist, generator):
        like = dist.params.detach()

        def glorot(fan_in, fan_out, shape):  # Keras' default initialiser, as the authors' Dense layers
            bound = math.sqrt(6 / (fan_in + fan_out))
            u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
            return (2 * u - 1) * bound

        zero = lambda *shape: torch.zeros(shape, dtype=like.dtype, device=like.device)  # noqa: E731
        return Trainable.create({
            "alpha": zero(), "beta": zero(),
            "wx": glorot(1, self.hidden, (self.hidden,)), "wz": glorot(1, self.hidden, (self.hidden,)),
            "b1": zero(self.hidden), "w2": glorot(self.hidden, 2, (self.hidden, 2)), "b2": zero(2),
        })

    def surrogate(self, dist, f, noise, state):
        inputs, fb = stein_inputs(dist, f, noise["samples"].movedim(1, 0), self.k)
        grad = stein_estimate(inputs, state.params, dist)
        theta = dist.params
        # Value mean f(b_i) (pathwise gradient for f's own parameters); gradient ĝ for θ.
        value = sum_units(fb.mean(0)) + (grad.detach() * (theta - theta.detach())).reshape(theta.shape[0], -1).sum(1)
        return Surrogate(value, {"inputs": inputs})

    def update(self, state, dist, f, noise, out):
        if not self.adapt:
            return state
        with torch.enable_grad():
            leaves = state.leaves()
            grad = stein_estimate(out.aux["inputs"], leaves, dist)
            second_moment = (grad * grad).reshape(grad.shape[0], -1).sum(1).mean()
            grads = torch.autograd.grad(second_moment, list(leaves.values()))
        return state.adam(dict(zip(leaves, grads)), self.lr)
