"""Double control variates (Titsias & Shi, AISTATS 2022), binary variables, k samples.

REINFORCE leave-one-out over k independent samples b_1..b_k (the global control
variate), with each sample's learning signal f(b_i) further corrected by a local,
linear control variate built from the other samples' gradients of f,

    c_i = α·Σ_d ḡ_{−i,d}·(b_{i,d} − p_d),   ḡ_{−i} = mean_{j≠i} ∇_b f(b_j),

and the expectation of that correction removed analytically:

    ĝ = (1/k)·Σ_i (f̃_i − mean_{j≠i} f̃_j)·(b_i − p) − α·ḡ ⊙ p(1 − p),
    f̃_i = f(b_i) + c_i,  ḡ = mean_j ∇_b f(b_j),  p = σ(θ).

ḡ_{−i} does not depend on b_i, so E[c_i·(b_i − p)] = α·E[∇_b f]⊙p(1 − p), which the
last term subtracts with the unbiased ḡ; the cross terms E[f̃_j·(b_i − p)], j ≠ i,
vanish because c_j is linear in the independent b_j − p. So ĝ is unbiased for any α.
α (a scalar, starting at 0, where ĝ is RLOO) is state, tuned by Adam to minimise
‖ĝ‖² as in the authors' code (thjashin/double-cv, learning rate 1e-3 there); ĝ is
linear in α, so that gradient is exact. Needs ∇_b f at the binary samples (f
differentiable, evaluated only at the samples): k evaluations of f and one backward
pass through f.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution, Objective
from gradbench.noise import NoiseSpec
from gradbench.params import param
from gradbench.registry import estimators

from .adaptive import Trainable
from .score_function import per_variable, sum_to_units, sum_units


def double_cv_parts(dist: Distribution, f: Objective, u: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """ĝ = A + α·B: ``A, B [n, *batch]`` (constants) and f(b_i) ``[k, n, *units]`` (with f's own graph).

    u: uniforms ``[k, n, *batch]`` giving the samples b_i = 1[u_i < p].
    """
    theta = dist.params
    p = torch.sigmoid(theta.detach())
    b = (u < p).to(theta.dtype).requires_grad_(True)
    with torch.enable_grad():
        fb = f(b, lead=1)  # [k, n, *units]
        (grad_b,) = torch.autograd.grad(fb.sum(), b, retain_graph=True)
    fb_const, score = fb.detach(), b.detach() - p
    others = (grad_b.sum(0, keepdim=True) - grad_b) / (k - 1)  # ḡ_{−i}
    local = sum_to_units(others * score, dist, lead=1)  # c_i / α: [k, n, *units]

    def loo(signal: Tensor) -> Tensor:  # Σ_i (s_i − mean_{j≠i} s_j)(b_i − p) / k
        centred = signal - (signal.sum(0, keepdim=True) - signal) / (k - 1)
        return (per_variable(centred, dist) * score).mean(0)

    a = loo(fb_const)
    b_coef = loo(local) - grad_b.mean(0) * p * (1 - p)
    return a, b_coef, fb


@estimators.register
@dataclass(frozen=True)
class DoubleCV(Estimator):
    """Double control variates (Titsias & Shi 2022): leave-one-out REINFORCE plus a learned local linear control variate. Unbiased, k evaluations."""

    name = "double-cv"
    unbiased = True
    families = ("bernoulli",)
    evaluations = FromParam("k")
    differentiable_f = True
    masks = False  # binary variables only
    stateful = True
    k: int = param(4, "independent samples per estimate (the authors' code uses 4)", ge=2)
    lr: float = param(1e-3, "Adam learning rate of α, which minimises ‖ĝ‖²", gt=0.0)
    adapt: bool = param(True, "tune α online (else α stays at 0: plain leave-one-out REINFORCE)")

    def noise(self, dist):
        return {"samples": NoiseSpec("uniform", (self.k, *dist.batch_shape))}

    def init(self, dist, generator):
        like = dist.params.detach()
        return Trainable.create({"alpha": torch.zeros((), dtype=like.dtype, device=like.device)})

    def surrogate(self, dist, f, noise, state):
        a, b_coef, fb = double_cv_parts(dist, f, noise["samples"].movedim(1, 0), self.k)
        grad = a + state.params["alpha"] * b_coef
        theta = dist.params
        # Value mean f(b_i) (pathwise gradient for f's own parameters); gradient ĝ for θ.
        return Surrogate(sum_units(fb.mean(0)) + (grad.detach() * (theta - theta.detach())).reshape(theta.shape[0], -1).sum(1),
                         {"a": a, "b": b_coef})

    def update(self, state, dist, f, noise, out):
        if not self.adapt:
            return state
        a, b_coef = out.aux["a"], out.aux["b"]
        grad = a + state.params["alpha"] * b_coef
        # d/dα of the mean over copies of ‖A + αB‖².
        d_alpha = 2 * (grad * b_coef).reshape(grad.shape[0], -1).sum(1).mean()
        return state.adam({"alpha": d_alpha}, self.lr)
