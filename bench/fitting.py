"""Train a fixed task's own parameters with an estimator: the generic trainer of toy tasks.

A fixed task defines E_{x~p_θ}[f(x)] at parameters θ (its :class:`Problem`). Fitting
minimises it over θ with Adam, one gradient estimate per step being the mean of
``batch`` estimates (the estimator's surrogate on ``batch`` parameter copies),
exactly as a model would be trained with the estimator. Used for ReinMax's
polynomial programming (tasks/poly.py) and usable with every fixed task whose f
does not itself depend on θ (toy-latent's f holds q at its initial θ₀, so fitting it
minimises a different objective).

Several seeds are trained at once when the estimator is stateless: their parameters
are stacked ``[S, *shape]`` and the copies ``[S·batch, *shape]`` drawn together. Each
seed's noise comes from its own stream and Adam acts elementwise, so every seed's
curve is bit-identical to training it alone. Stateful estimators (one state adapts
to one run) train one seed at a time.

The loss recorded is the exact E f when the problem offers ``expectation(params)``
and the mean surrogate value of the batch (what a training loop sees) always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .contract import Estimator, Problem
from .view import View
from .noise import NoiseSource, derive_seed


@dataclass(frozen=True)
class FitConfig:
    """steps of Adam (learning rate ``lr``), ``batch`` estimates averaged per step, a curve point every ``log_every``."""

    steps: int = 8000
    batch: int = 64
    lr: float = 1e-3
    log_every: int = 200


def fit(problems: list[Problem], estimator: Estimator, config: FitConfig, seeds: list[int],
        on_step: Callable[[int, dict[str, Tensor], dict[str, Tensor]], None] | None = None) -> list[dict[str, Any]]:
    """Train each problem's parameters (problem s with noise seed ``seeds[s]``); curve rows per seed and logged step.

    Rows: ``{"seed", "step", "expected_loss" (nan if the problem has no expectation), "batch_loss"}``.
    on_step(step, grads, params): called every step with the gradient estimates ``{group: [S, *shape]}``
    (one per seed) and the parameters they were taken at, before the update (for training-time
    statistics such as the DisARM papers' moving-average variance).
    """
    if len(problems) != len(seeds):
        raise ValueError(f"{len(problems)} problems but {len(seeds)} seeds; give one seed per problem")
    if estimator.stateful:
        return [row for p, s in zip(problems, seeds) for row in _fit([p], estimator, config, [s], on_step)]
    return _fit(problems, estimator, config, seeds, on_step)


def _fit(problems: list[Problem], estimator: Estimator, config: FitConfig, seeds: list[int],
         on_step: Callable[[int, dict[str, Tensor], dict[str, Tensor]], None] | None) -> list[dict[str, Any]]:
    S, B = len(problems), config.batch
    first = problems[0]
    view = View(first, estimator)
    params = {k: torch.stack([p.parameters()[k].detach() for p in problems]).clone().requires_grad_(True)
              for k in first.parameters()}
    optimiser = _Adam(list(params.values()), config.lr)
    device, dtype = next(iter(params.values())).device, next(iter(params.values())).dtype
    sources = [NoiseSource(derive_seed(seed, "fit"), "fit", device, dtype) for seed in seeds]
    specs = estimator.noise(view.template)
    state = None
    if estimator.stateful:
        generator = torch.Generator(device).manual_seed(derive_seed(seeds[0], "init", estimator.name))
        state = estimator.init(view.template, generator)
    expectation = getattr(first, "expectation", None)
    rows: list[dict[str, Any]] = []
    for step in range(config.steps + 1):
        copies = {k: v.unsqueeze(1).expand(S, B, *v.shape[1:]).reshape(S * B, *v.shape[1:]) for k, v in params.items()}
        dist = view.distribution(copies)
        noise = {name: torch.cat([src.draw(name, spec, step * B, (step + 1) * B) for src in sources])
                 for name, spec in specs.items()}
        out = view.surrogate(estimator, dist, noise, state)
        per_seed = out.value.reshape(S, B).mean(1)
        if step % config.log_every == 0 or step == config.steps:
            with torch.no_grad():
                exact = expectation({k: v.detach() for k, v in params.items()}) if expectation else None
            for s in range(S):
                rows.append({"seed": seeds[s], "step": step, "batch_loss": float(per_seed[s].detach()),
                             "expected_loss": float(exact[s]) if exact is not None else float("nan")})
        if step == config.steps:
            break
        grads = torch.autograd.grad(per_seed.sum(), list(params.values()))
        if not all(torch.isfinite(g).all() for g in grads):
            raise FloatingPointError(f"{estimator.label}: non-finite gradient at step {step}")
        if on_step is not None:
            on_step(step, {k: g.detach() for k, g in zip(params, grads)}, {k: v.detach().clone() for k, v in params.items()})
        optimiser.step(grads)
        if estimator.stateful:
            state = estimator.update(state, dist, view.objective, noise, out)
    return rows


class _Adam:
    """Adam (Kingma & Ba; torch's defaults β = (0.9, 0.999), ε = 1e-8), elementwise, so stacked seeds stay independent.

    Written out because importing torch.optim pulls in torch._dynamo (seconds per process).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def final_losses(rows: list[dict[str, Any]], key: str = "expected_loss") -> dict[int, float]:
    """The last logged ``key`` per seed."""
    last: dict[int, tuple[int, float]] = {}
    for row in rows:
        if row["seed"] not in last or row["step"] >= last[row["seed"]][0]:
            last[row["seed"]] = (row["step"], row[key])
    return {seed: value for seed, (_, value) in last.items()}
