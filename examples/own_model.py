"""Gradient bias and variance on your own model, with no Task class: a tiny categorical-latent autoencoder.

An encoder maps each of B = 4 data points to the logits of one categorical latent over
K = 5 values; a decoder maps the one-hot latent back to the data space; the objective is
the squared reconstruction error, one value per data point (``[N, B]``). We measure, at the
model's current (frozen) parameters, how well three estimators estimate the gradient of
E_z[reconstruction error] with respect to the encoder's parameters. The support has
5^4 = 625 joint outcomes, so the reference gradient is exact.

    python examples/own_model.py [--samples 10000] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import gradbench

B, D, K = 4, 6, 5  # data points, data dimension, latent categories


def build_model(seed: int = 0) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """Encoder ``[B, D] -> [B, K]`` logits, decoder ``[..., K] -> [..., D]``, and data ``[B, D]`` (float64)."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, K)).double()
    decoder = nn.Linear(K, D).double()
    data = torch.randn(B, D, dtype=torch.float64)
    return encoder, decoder, data


def main(samples: int = 10_000, seed: int = 0):
    encoder, decoder, data = build_model()
    for p in decoder.parameters():
        p.requires_grad_(False)  # the decoder is part of f; only the encoder's gradient is measured

    def reconstruction_error(z: torch.Tensor) -> torch.Tensor:
        """z ``[N, B, K]`` (one-hot, or relaxed for GST's backward pass) -> error per data point ``[N, B]``."""
        return ((decoder(z) - data) ** 2).sum(-1)

    df = gradbench.measure_gradients(["rloo", "stgs", "gst"], reconstruction_error, encoder=encoder, inputs=data,
                                     samples=samples, seed=seed)
    shown = ["bias_norm", "relative_bias", "variance", "cosine"]
    table = df[df["metric"].isin(shown)].pivot(index="estimator_label", columns="metric", values="value")[shown]
    n_params = sum(p.numel() for p in encoder.parameters())
    print(f"gradient of E_z[error] w.r.t. the encoder's {n_params} parameters; {samples:,} estimates per estimator; "
          f"reference: {df['reference'].iloc[0]}")
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    return df


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.samples, args.seed)
