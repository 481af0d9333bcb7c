"""Reference gradients of the VAE loss at frozen parameters: exact (tiny latents) and REINFORCE-LOO.

Both work on the logits and reach the encoder through one backward (``EncoderMap.vjp``),
because the score of a categorical has a closed form, ∇_θ log q(z) = onehot(z) −
softmax(θ) (Bernoulli: z − σ(θ)): a draw costs one decoder forward pass, no backward.

exact: E_q[f] = Σ_z q(z | x_b) f_b(z) over all K^L configurations per image (the
    images are independent, so it is K^L per image, not per batch); feasible for tiny
    latent spaces (3 × 10 latents: 1,000 configurations).
REINFORCE-LOO: G groups of m draws per image; group j's estimate is
    (1/(m−1)) [Σ_i f_i s_i − (Σ_i f_i / m) Σ_i s_i], the leave-one-out estimator written
    with running sums (memory flat in m). The reference is the mean of the G unbiased
    group estimates; its trace error variance is their spread / G, the encoder part of
    it from ghost norms of the group estimates.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from gradbench.errors import UserError
from gradbench.noise import NoiseSource, derive_seed
from gradbench.options import check_value
from gradbench.references import Reference

from .problem import VAEProblem

MAX_EXACT_CONFIGURATIONS = 1 << 14  # per image
_ROWS = 1 << 13  # decoder rows per forward pass: big enough for BLAS, small enough for the cache


def configurations(problem: VAEProblem) -> Tensor | None:
    """Every latent configuration ``[C, *latent]`` (one-hot or 0/1), or None if more than the cap."""
    model = problem.model
    values = model.categories if model.latent == "categorical" else 2
    if values**model.latents > MAX_EXACT_CONFIGURATIONS:
        return None
    index = torch.arange(values, device=problem.logits.device)
    grid = torch.cartesian_prod(*[index] * model.latents).reshape(-1, model.latents)  # [C, L]
    if model.latent == "categorical":
        return torch.nn.functional.one_hot(grid, values).to(problem.logits.dtype)
    return grid.to(problem.logits.dtype)


def exact_gradient(problem: VAEProblem) -> dict[str, Tensor] | None:
    """∇ of (1/B) Σ_b E_q[BCE_b] + KL by enumeration, or None if the latent space is too big."""
    configs = configurations(problem)
    if configs is None:
        return None
    batch = problem.images.shape[0]
    with torch.no_grad():
        chunk = max(1, _ROWS // batch)
        f = torch.cat([problem.objective(c.unsqueeze(1).expand(-1, batch, *c.shape[1:]))
                       for c in configs.split(chunk)])  # [C, B]
    logits = problem.logits.detach().clone().requires_grad_(True)
    log_q = _log_q(problem, logits, configs)  # [C, B]
    expectation = (log_q.exp() * f).sum()
    (grad,) = torch.autograd.grad(expectation, [logits])
    grad = grad + problem.kl_grad
    encoder = problem.encoder_map.vjp(grad.reshape(batch, -1))
    return {"encoder": encoder.to(torch.float64), "logits": grad.reshape(-1).to(torch.float64)}


def _log_q(problem: VAEProblem, logits: Tensor, configs: Tensor) -> Tensor:
    """log q(z_c | x_b) for every configuration and image: ``[C, B]``."""
    if problem.model.latent == "categorical":
        return torch.einsum("clk,blk->cb", configs, torch.log_softmax(logits, -1))
    logsig = torch.nn.functional.logsigmoid
    return configs @ logsig(logits).T + (1 - configs) @ logsig(-logits).T


def reinforce_reference(problem: VAEProblem, samples: int, seed: int,
                        progress: Callable[[int], None] | None = None) -> Reference:
    """REINFORCE-LOO over ``samples`` draws per image, in G groups of m (as the core's reference)."""
    check_value("reference_samples", samples)
    m = max(2, min(1000, samples // 20))
    groups = samples // m
    batch = problem.images.shape[0]
    template = problem.distribution({"logits": problem.logits.unsqueeze(0)})
    probs = template.probs[0]
    spec = template.sample_noise()
    source = NoiseSource(derive_seed(seed, "reference"), "reference", problem.logits.device, problem.logits.dtype)
    chunk = max(1, min(m, _ROWS // batch))
    totals: dict[str, Tensor] = {}
    squares: dict[str, Tensor] = {}
    for j in range(groups):
        sum_fs = torch.zeros(probs.shape, dtype=torch.float64, device=probs.device)
        sum_s = torch.zeros_like(sum_fs)
        sum_f = torch.zeros(batch, dtype=torch.float64, device=probs.device)
        shift = None
        for start in range(j * m, (j + 1) * m, chunk):
            stop = min(start + chunk, (j + 1) * m)
            with torch.no_grad():
                z = template.sample(source.draw("sample", spec, start, stop))  # [c, B, *latent]
                f = problem.objective(z).to(torch.float64)  # [c, B]
            # LOO is unchanged by a per-image shift of f; shifting keeps the sums well conditioned.
            shift = f[0] if shift is None else shift
            f = f - shift
            score = (z - probs).to(torch.float64)
            extra = (1,) * (score.dim() - 2)
            sum_fs += (f.reshape(*f.shape, *extra) * score).sum(0)
            sum_s += score.sum(0)
            sum_f += f.sum(0)
            if progress is not None:
                progress(stop - start)
        estimate = (sum_fs - (sum_f / m).reshape(batch, *extra) * sum_s) / (m - 1)
        estimate = estimate.to(problem.logits.dtype) + problem.kl_grad
        for group, chunk_stats in problem.stats(estimate.unsqueeze(0), None).items():
            totals[group] = chunk_stats.total if group not in totals else totals[group] + chunk_stats.total
            squares[group] = chunk_stats.sq.sum() if group not in squares else squares[group] + chunk_stats.sq.sum()
    gradient, variance = {}, {}
    for group, total in totals.items():
        gradient[group] = total / groups
        spread = max(float(squares[group]) - float(total @ total) / groups, 0.0) / (groups - 1)
        variance[group] = spread / groups
        if not (math.isfinite(variance[group]) and torch.isfinite(gradient[group]).all()):
            raise UserError(f"the REINFORCE reference for {group!r} is not finite; the model's loss overflowed")
    return Reference("reinforce", groups * m, gradient, variance)
