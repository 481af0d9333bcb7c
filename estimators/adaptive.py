"""Explicit, immutable state for estimators that learn: parameters with their Adam moments.

Baselines and control variates (NVIL's c_ψ, REBAR's η and temperature, RELAX's
network) are tensors adapted by Adam. They live in a :class:`Trainable`, a frozen
value that ``update`` replaces rather than mutates, so a state object can never
be shared or changed behind an estimator's back: every measurement and every
seed starts from its own ``init``. Adam is written out here (a few lines) rather
than borrowed from ``torch.optim`` because an optimiser object holds hidden,
mutable state, which is exactly what the contract forbids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Trainable:
    """Named parameter tensors plus Adam's first and second moments and step count."""

    params: dict[str, Tensor]
    m: dict[str, Tensor]
    v: dict[str, Tensor]
    step: int = 0

    @classmethod
    def create(cls, params: dict[str, Tensor]) -> Trainable:
        params = {k: p.detach().clone() for k, p in params.items()}
        zeros = lambda: {k: torch.zeros_like(p) for k, p in params.items()}  # noqa: E731
        return cls(params, zeros(), zeros(), 0)

    def leaves(self) -> dict[str, Tensor]:
        """Fresh copies requiring grad, to differentiate a loss with respect to the parameters."""
        return {k: p.detach().clone().requires_grad_(True) for k, p in self.params.items()}

    def adam(self, grads: dict[str, Tensor | None], lr: float, betas: tuple[float, float] = (0.9, 0.999),
             eps: float = 1e-8) -> Trainable:
        """One Adam step (Kingma & Ba 2015); a None gradient counts as zero."""
        b1, b2 = betas
        step = self.step + 1
        params, m, v = {}, {}, {}
        for k, p in self.params.items():
            g = grads.get(k)
            g = torch.zeros_like(p) if g is None else g.detach()
            m[k] = b1 * self.m[k] + (1 - b1) * g
            v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = m[k] / (1 - b1**step)
            v_hat = v[k] / (1 - b2**step)
            params[k] = p - lr * m_hat / (v_hat.sqrt() + eps)
        return Trainable(params, m, v, step)


def mlp_params(sizes: list[int], generator: torch.Generator, like: Tensor, zero_last: bool = True) -> dict[str, Tensor]:
    """Weights of a tanh MLP with layer widths ``sizes`` (PyTorch's default uniform init).

    zero_last: the output layer starts at zero, so a learned control variate or
    baseline starts as "no correction" and only moves where it reduces variance.
    """
    out = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1 / math.sqrt(max(fan_in, 1))
        last = i == len(sizes) - 2
        for name, shape in ((f"w{i}", (fan_in, fan_out)), (f"b{i}", (fan_out,))):
            u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
            out[name] = torch.zeros_like(u) if (last and zero_last) else (2 * u - 1) * bound
    return out


def mlp(params: dict[str, Tensor], x: Tensor) -> Tensor:
    """``x [..., sizes[0]] -> [..., sizes[-1]]`` with tanh between layers (other keys in ``params`` are ignored)."""
    layers = sum(1 for k in params if k[0] == "w" and k[1:].isdigit())
    for i in range(layers):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            x = torch.tanh(x)
    return x
