"""Evaluation bounds of a trained VAE: one-sample negative ELBO and the k-sample IWAE bound.

Both draw exact samples z ~ q(z | x) from keyed noise (:class:`NoiseSource`), so every
estimator evaluated at the same epoch and seed sees the same draws.

neg_elbo: BCE(x, dec(z)) + KL(q ‖ prior) with one hard sample, the GST paper's test metric.
iwae: −log (1/k) Σ_j p(x, z_j)/q(z_j | x), the importance-weighted bound (Burda et al.
    2016); it tightens towards −log p(x) as k grows, so it is the honest likelihood
    estimate that the one-sample ELBO is not.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradbench.noise import NoiseSource

from .model import VAE
from .problem import latent_distribution

EVAL_BATCH = 1000  # images per encoder pass
_ROWS = 1 << 13  # decoder rows per pass (samples × images)


def posterior(model: VAE, x: Tensor):
    """q(z | x) for images ``x [B, 784]`` as a distribution with one estimate copy and one unit per image."""
    return latent_distribution(model.latent, model.logits(x).unsqueeze(0))


@torch.no_grad()
def log_weights(model: VAE, x: Tensor, k: int, noise: NoiseSource, tag: str) -> Tensor:
    """log p(x, z_j) − log q(z_j | x) for k exact samples per image: ``[k, B]``."""
    q = posterior(model, x)
    spec = q.sample_noise()
    chunk = max(1, _ROWS // x.shape[0])
    out = []
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        z = q.sample(noise.draw(tag, spec, start, stop))  # [c, B, *latent]
        out.append(model.log_prior - model.bce(x, z) - q.log_prob_units(z))
    return torch.cat(out)


@torch.no_grad()
def neg_elbo(model: VAE, images: Tensor, noise: NoiseSource) -> float:
    """Mean over images of BCE at one exact sample + the closed-form KL."""
    total = 0.0
    for i, x in enumerate(images.split(EVAL_BATCH)):
        q = posterior(model, x)
        z = q.sample(noise.draw(f"elbo:{i}", q.sample_noise(), 0, 1))
        total += float((model.bce(x, z)[0] + model.kl(q.params[0])).sum())
    return total / images.shape[0]


@torch.no_grad()
def iwae(model: VAE, images: Tensor, k: int, noise: NoiseSource) -> float:
    """Mean over images of −log (1/k) Σ_j w_j, the k-sample importance-weighted bound."""
    total = 0.0
    for i, x in enumerate(images.split(EVAL_BATCH)):
        log_w = log_weights(model, x, k, noise, f"iwae:{i}")
        total += float(-(torch.logsumexp(log_w, 0) - math.log(k)).sum())
    return total / images.shape[0]
