"""The VAE's gradient at frozen parameters on a fixed batch of images: a :class:`Problem`.

The measured objective is the GST repository's loss, averaged over the B images:
(1/B) Σ_b (E_q[BCE(x_b, dec(z))] + KL(q(z | x_b) ‖ prior)). The estimator handles
the expectation, seeing f = BCE per image exactly as in training (one unit per image, so
score-function estimators pair each image's f with its own log q); its gradient is
scaled by 1/B, and the KL term is exact, its gradient added to every estimate.

Parameter groups: ``logits`` (the encoder's output, ``[B, L(, K)]``) and ``encoder``
(all encoder weights and biases, flattened layer by layer). The estimator only ever
sees the distribution over latents and f; the encoder gradient is obtained from the
logits gradient through :class:`~.ghost.EncoderMap` (``chunk_stats``), so no
parameter-sized vector is formed per draw. The ``loop`` engine is the GST
repository's way instead: a full forward and backward pass of the whole VAE per draw.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from gradbench.contract import Chunk, Estimator, Problem
from gradbench.families.categorical import Bernoulli, Categorical, Objective

from .ghost import EncoderMap
from .model import VAE

GROUPS = ("encoder", "logits")
_ROWS = 1 << 12  # decoder rows (draws × images) per batched pass; larger is no faster on a CPU


@dataclass(frozen=True)
class ImageObjective(Objective):
    """f per image, plus the images themselves.

    context: the images ``[B, 784]``, one row per unit: the hook for estimators with
        an input-dependent baseline (NVIL's c_ψ(x)); read it with
        ``getattr(f, "context", None)``.
    """

    context: Tensor | None = None


def latent_distribution(latent: str, logits: Tensor):
    """q(z | x) for logits ``[n, B, *latent]``: one unit per image (score-function
    estimators pair each image's f with that image's log q only)."""
    return Categorical(logits, units=1) if latent == "categorical" else Bernoulli(logits, units=1)


def image_objective(model: VAE, x: Tensor, scale: float = 1.0) -> ImageObjective:
    """f(z) = scale · BCE(x, dec(z)) per image, with log p(x, z) for importance weights."""
    return ImageObjective(
        fn=lambda z: model.bce(x, z) * scale,
        log_joint=lambda z: model.log_prior - model.bce(x, z),
        context=x,
    )


class ImageBatch(Problem):
    """What an estimator sees of a batch of images ``x [B, 784]``: q(z | x) from ``logits`` and f = BCE per image.

    Training and measurement both hand the estimator this unscaled f (the authors' per-image
    loss), so estimators whose learned parts are not scale-equivariant in f (RODEO's network,
    NVIL's and RELAX's baselines) are measured on the f they were trained on; the measurement
    scales the resulting gradient by 1/B afterwards.
    """

    def __init__(self, model: VAE, x: Tensor, logits: Tensor):
        self.family = model.latent
        self.logits = logits.detach()
        self.objective = image_objective(model, x)

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return latent_distribution(self.family, params["logits"])


class VAEProblem(Problem):
    """Gradient of the mean per-image loss at frozen parameters for images ``x [B, 784]``.

    model: the VAE (copied and frozen here). kl: add the closed-form KL term.
    """

    def __init__(self, model: VAE, x: Tensor, kl: bool = True):
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.images = x
        self.family = model.latent
        self.scale = 1.0 / x.shape[0]
        with torch.no_grad():
            self.logits = self.model.logits(x)
        self.encoder_map = EncoderMap(self.model.encoder, x)
        self.kl_grad = self._kl_gradient() if kl else torch.zeros_like(self.logits)
        self.with_kl = kl
        self.objective = image_objective(self.model, x, self.scale)
        self._views: dict[int, Any] = {}
        self._projection: tuple[Tensor, Tensor] | None = None

    # -- the Problem interface ---------------------------------------------------------
    def parameters(self) -> dict[str, Tensor]:
        return {"encoder": EncoderMap.flatten(self.model.encoder).detach(), "logits": self.logits}

    def distribution(self, params: dict[str, Tensor]):
        # Only the logits define the distribution; the encoder group is reached through them.
        return latent_distribution(self.family, params["logits"])

    def exact_gradient(self) -> dict[str, Tensor] | None:
        from .reference import exact_gradient

        return exact_gradient(self)

    def reinforce_reference(self, samples: int, seed: int, progress: Callable[[int], None] | None = None):
        from .reference import reinforce_reference

        return reinforce_reference(self, samples, seed, progress)

    def chunk_stats(self, estimator, state, noise, engine, reference) -> dict[str, Chunk]:
        if engine == "loop":
            return self._loop_stats(estimator, state, noise, reference)
        # Pieces of about _ROWS decoder rows: a memory ceiling whatever chunk the runner hands over.
        n = next(iter(noise.values())).shape[0]
        step = max(1, _ROWS // self.images.shape[0])
        parts = [self.stats(self.logits_gradients(estimator, state, {k: v[i : i + step] for k, v in noise.items()}),
                            reference) for i in range(0, n, step)]
        return {g: Chunk(sum(p[g].total for p in parts), torch.cat([p[g].sq for p in parts]),
                         torch.cat([p[g].dot for p in parts])) for g in GROUPS}

    # -- helpers -----------------------------------------------------------------------
    def view(self, estimator: Estimator):
        """The estimator's view of the images (native, or categorical for Bernoulli latents), f unscaled."""
        from gradbench.view import View

        key = id(estimator)
        if key not in self._views:
            self._views[key] = (estimator, View(ImageBatch(self.model, self.images, self.logits), estimator))
        return self._views[key][1]

    def logits_gradients(self, estimator: Estimator, state: Any, noise: dict[str, Tensor]) -> Tensor:
        """One estimate of the loss gradient w.r.t. the logits per noise draw: ``[n, B, *latent]``."""
        view = self.view(estimator)
        n = next(iter(noise.values())).shape[0]
        logits = self.logits.unsqueeze(0).expand(n, *self.logits.shape).clone().requires_grad_(True)
        out = estimator.surrogate(view.distribution({"logits": logits}), view.objective, noise, state)
        (grad,) = torch.autograd.grad(out.value.sum(), [logits], allow_unused=True)
        grad = torch.zeros_like(logits) if grad is None else grad
        return grad.detach() * self.scale + self.kl_grad  # the estimator saw f per image: the mean's gradient

    def stats(self, grads: Tensor, reference: dict[str, Tensor] | None) -> dict[str, Chunk]:
        """Chunk statistics of both groups from logits gradients ``[n, B, *latent]``."""
        n = grads.shape[0]
        flat = grads.reshape(n, -1)
        total, sq = self.encoder_map.backward(flat.reshape(n, self.images.shape[0], -1))
        if reference is None:
            dot = torch.zeros(n, dtype=torch.float64, device=flat.device)
        else:
            dot = flat.to(torch.float64) @ self._project(reference["encoder"])
        encoder = Chunk(total.to(torch.float64), sq.to(torch.float64), dot)
        logits = Chunk.from_gradients(flat, None if reference is None else reference["logits"].reshape(-1))
        return {"encoder": encoder, "logits": logits}

    def _project(self, ref_encoder: Tensor) -> Tensor:
        """J r for the encoder reference r (flat ``[B·out]``, float64), cached per reference."""
        if self._projection is None or self._projection[0] is not ref_encoder:
            with torch.no_grad():
                projected = self.encoder_map.jvp(ref_encoder).reshape(-1).to(torch.float64)
            self._projection = (ref_encoder, projected)
        return self._projection[1]

    def _kl_gradient(self) -> Tensor:
        logits = self.logits.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.model.kl(logits).sum() * self.scale, [logits])
        return grad

    # -- the GST repository's way ------------------------------------------------------
    def _loop_stats(self, estimator, state, noise, reference) -> dict[str, Chunk]:
        """A full forward and backward pass of the whole VAE per draw (encoder and decoder weights)."""
        n = next(iter(noise.values())).shape[0]
        view = self.view(estimator)
        encoder_params = [t for layer in self.model.encoder.layers for t in (layer.weight, layer.bias)]
        decoder_params = list(self.model.decoder.parameters())
        acc = {g: [None, [], []] for g in GROUPS}
        with _trainable(self.model):
            for i in range(n):
                logits = self.model.logits(self.images)
                dist = view.distribution({"logits": logits.unsqueeze(0)})
                out = estimator.surrogate(dist, view.objective, {k: v[i : i + 1] for k, v in noise.items()}, state)
                loss = out.value.sum() * self.scale  # the estimator saw f per image: the mean's gradient
                if self.with_kl:
                    loss = loss + self.model.kl(logits).sum() * self.scale
                grads = torch.autograd.grad(loss, [*encoder_params, logits, *decoder_params], allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g
                         for p, g in zip([*encoder_params, logits, *decoder_params], grads)]
                per_group = {"encoder": EncoderMap.flatten_grads(grads[: len(encoder_params)]),
                             "logits": grads[len(encoder_params)].reshape(-1)}
                for group, g in per_group.items():
                    g = g.to(torch.float64)
                    a = acc[group]
                    a[0] = g if a[0] is None else a[0] + g
                    a[1].append(g @ g)
                    a[2].append(g @ reference[group].reshape(-1) if reference is not None else g.new_zeros(()))
        return {g: Chunk(a[0], torch.stack(a[1]), torch.stack(a[2])) for g, a in acc.items()}


@contextmanager
def _trainable(model: VAE):
    model.requires_grad_(True)
    try:
        yield
    finally:
        model.requires_grad_(False)

