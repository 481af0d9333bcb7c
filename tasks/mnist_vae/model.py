"""The discrete VAE: an MLP encoder to latent logits, an MLP decoder to Bernoulli pixel logits.

Categorical latents (GST protocol): L variables of K categories, encoder
784-512-256-(L·K), decoder (L·K)-256-512-784, ReLU, uniform prior. Binary latents
(DisARM protocol): L Bernoulli variables, encoder 784-(hidden)-L, prior Bernoulli(½).
The encoder's logits are linear (the GST repository's ReLU on them is a known bug,
not copied). Everything a gradient estimator needs is a per-image quantity:

* ``logits(x)``: ``[B, L, K]`` (categorical) or ``[B, L]`` (binary);
* ``bce(x, z)``: −log p(x | z) summed over pixels, ``z [N, B, L(, K)] -> [N, B]``;
* ``kl(logits)``: KL(q(z | x) ‖ prior) in closed form, ``[B]``;
* ``log_prior``: log p(z), the same for every z (uniform priors).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

PIXELS = 784
LATENT_KINDS = ("categorical", "bernoulli")
ACTIVATIONS = ("relu", "leaky_relu")
LEAKY_SLOPE = 0.3  # DisARM's LeakyReLU slope


class MLP(nn.Module):
    """Linear layers with an activation between them (none after the last).

    Kept as a plain list of ``nn.Linear`` so the measurement code can walk the
    layers itself (cached activations, ghost norms) without hooks.
    """

    def __init__(self, sizes: list[int], activation: str):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation

    def act(self, a: Tensor) -> Tensor:
        return F.relu(a) if self.activation == "relu" else F.leaky_relu(a, LEAKY_SLOPE)

    def act_grad(self, a: Tensor) -> Tensor:
        """Derivative of the activation at pre-activations ``a`` (same shape)."""
        slope = 0.0 if self.activation == "relu" else LEAKY_SLOPE
        return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, slope))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x

    def forward_cached(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Output plus each layer's input ``h_{l-1} [B, in_l]`` and pre-activation ``a_l [B, out_l]``."""
        inputs, pre = [], []
        for i, layer in enumerate(self.layers):
            inputs.append(x)
            x = layer(x)
            pre.append(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x, inputs, pre


class VAE(nn.Module):
    """A VAE with categorical (K ≥ 2) or Bernoulli latents."""

    def __init__(self, latent: str, latents: int, categories: int, encoder_hidden: list[int],
                 decoder_hidden: list[int], activation: str):
        super().__init__()
        if latent not in LATENT_KINDS:
            raise ValueError(f"latent must be one of {LATENT_KINDS}, got {latent!r}")
        self.latent, self.latents = latent, latents
        self.categories = categories if latent == "categorical" else 1
        width = latents * self.categories
        self.encoder = MLP([PIXELS, *encoder_hidden, width], activation)
        self.decoder = MLP([width, *decoder_hidden, PIXELS], activation)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.latents, self.categories) if self.latent == "categorical" else (self.latents,)

    def logits(self, x: Tensor) -> Tensor:
        """Encoder logits ``[B, *latent_shape]`` for images ``x [B, 784]``."""
        return self.encoder(x).reshape(x.shape[0], *self.latent_shape)

    def decode(self, z: Tensor) -> Tensor:
        """Pixel logits ``[*lead, 784]`` for latents ``z [*lead, *latent_shape]`` (one-hot, relaxed or 0/1)."""
        lead = z.shape[: z.dim() - len(self.latent_shape)]
        out = self.decoder(z.reshape(-1, self.latents * self.categories))
        return out.reshape(*lead, PIXELS)

    def bce(self, x: Tensor, z: Tensor) -> Tensor:
        """−log p(x | z) summed over pixels: ``x [B, 784]``, ``z [*lead, B, *latent] -> [*lead, B]``.

        Targets may be grey levels in [0, 1] (``binarize="none"``): then it is the
        cross-entropy the GST repository trains on, not a likelihood.
        """
        return bernoulli_nll(self.decode(z), x)

    def kl(self, logits: Tensor) -> Tensor:
        """KL(q(z | x) ‖ uniform prior) per image, ``[B, *latent] -> [B]``, in closed form."""
        if self.latent == "categorical":
            log_q = torch.log_softmax(logits, dim=-1)
            return (log_q.exp() * (log_q + math.log(self.categories))).sum((-2, -1))
        # Bernoulli(σ(θ)) against Bernoulli(½): Σ p log 2p + (1 − p) log 2(1 − p).
        p, log_p, log_1mp = torch.sigmoid(logits), F.logsigmoid(logits), F.logsigmoid(-logits)
        return (p * log_p + (1 - p) * log_1mp + math.log(2)).sum(-1)

    @property
    def log_prior(self) -> float:
        """log p(z): every configuration has the same prior probability."""
        per_variable = math.log(self.categories) if self.latent == "categorical" else math.log(2)
        return -self.latents * per_variable


def bernoulli_nll(pixel_logits: Tensor, x: Tensor) -> Tensor:
    """Σ_pixels −[x log σ(l) + (1 − x) log(1 − σ(l))] = Σ softplus(l) − Σ x·l (``x`` broadcasts).

    Two reductions instead of one over ``softplus(l) − x·l``: one fewer full-size
    temporary, about 1.7× faster on a CPU for the ``[n, B, 784]`` logits of a measurement.
    """
    return F.softplus(pixel_logits).sum(-1) - (pixel_logits * x).sum(-1)
