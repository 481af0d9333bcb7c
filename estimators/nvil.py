"""NVIL (Mnih & Gregor 2014): score function with learned, input-dependent baselines.

The learning signal l = f(x) (per unit) is centred by a running mean b and an
input-dependent baseline c_ψ, and optionally scaled by the running spread:
ĝ = (l − b − c_ψ(context))/s·∇log p(x), s = max(1, running std) when ``normalize``
else 1. c_ψ is trained online to minimise (l − b − c_ψ)², b and the spread are
moving averages with ``decay`` (the paper's α).

Context. c_ψ conditions on ``Objective.context``, per-unit inputs ``[*units, C]``
the task provides (the images of an image batch): c_ψ is then a one-hidden-layer
tanh network C → hidden → 1 shared by all units. A task without context gets one
learned constant per unit instead, which only makes sense when the units are the
same at every step (fixed problems): training tasks whose batches change must
provide a context. The network is created at the first update, when the context's
width is known, from a seed drawn by ``init``.

Unbiased without normalisation. With it the estimate is the unbiased one divided
by s, a state-dependent scale (the paper's choice for training; report it as such).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.capabilities import FromParam
from gradbench.contract import Estimator, Surrogate
from gradbench.params import param
from gradbench.registry import estimators

from .adaptive import Trainable, mlp, mlp_params
from .score_function import ANY_FAMILY, sum_units


@dataclass(frozen=True)
class NVILState:
    """mean: b (scalar). var: running mean of (l − c − b)² (scalar). baseline: c_ψ and its
    Adam moments, None before the first update. seed: for c_ψ's initial weights."""

    mean: Tensor
    var: Tensor
    baseline: Trainable | None
    seed: int


def input_baseline(params: dict[str, Tensor] | None, context: Tensor | None) -> Tensor | float:
    """c_ψ per unit: ``[*units]`` (a constant per unit, or the network on ``context [*units, C]``)."""
    if params is None:
        return 0.0
    if "const" in params:
        return params["const"]
    return mlp(params, context).squeeze(-1)


@estimators.register
@dataclass(frozen=True)
class NVIL(Estimator):
    """NVIL (Mnih & Gregor 2014): moving-average and input-dependent baselines, optional variance normalisation."""

    name = "nvil"
    unbiased = FromParam("normalize", negate=True)
    families = ANY_FAMILY
    stateful = True
    decay: float = param(0.8, "moving-average decay α of the mean and spread of the signal", ge=0.0, lt=1.0)
    hidden: int = param(100, "hidden tanh units of c_ψ when the task provides a context", ge=1)
    lr: float = param(0.01, "Adam learning rate of c_ψ", gt=0.0)
    normalize: bool = param(False, "divide the centred signal by max(1, running std) (biased in scale)")

    def init(self, dist, generator):
        zero = torch.zeros((), dtype=dist.params.dtype, device=dist.params.device)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        return NVILState(zero, zero.clone(), None, seed)

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        fx = f(x)
        params = None if state.baseline is None else state.baseline.params
        signal = fx.detach() - state.mean - input_baseline(params, f.context)
        if self.normalize:
            signal = signal / state.var.sqrt().clamp(min=1.0)
        log_p = dist.log_prob_units(x)
        return Surrogate(sum_units(fx + signal * (log_p - log_p.detach())), {"f": fx.detach()})

    def update(self, state, dist, f, noise, out):
        signal = out.aux["f"]  # [n, *units]
        baseline = state.baseline or Trainable.create(self._initial_baseline(state, dist, f.context))
        with torch.enable_grad():
            leaves = baseline.leaves()
            c = input_baseline(leaves, f.context)
            loss = ((signal - state.mean - c) ** 2).mean()
            grads = torch.autograd.grad(loss, list(leaves.values()))
        baseline = baseline.adam(dict(zip(leaves, grads)), self.lr)
        centred = signal - c.detach()
        a = self.decay
        return NVILState(a * state.mean + (1 - a) * centred.mean(),
                         a * state.var + (1 - a) * ((centred - state.mean) ** 2).mean(), baseline, state.seed)

    def _initial_baseline(self, state, dist, context):
        like = dist.params.detach()
        if context is None:
            return {"const": torch.zeros(dist.batch_shape[: dist.units], dtype=like.dtype, device=like.device)}
        generator = torch.Generator(like.device)
        generator.manual_seed(state.seed)
        return mlp_params([context.shape[-1], self.hidden, 1], generator, like.to(context.dtype))
