"""Gradient measurement for ListOps: the merge decisions of a frozen Tree-LSTM on a fixed batch.

Two parameter groups: ``query`` (the merge scorer q, ``[d]``) and ``model`` (every
weight, q included, flattened). The model is built from the ``model`` copy with
q_eff = q_model + (q − sg(q)): the same value, and the gradient with respect to
q_eff reaches both groups, so ``query``'s gradient is exactly ``model``'s q slice.

The reference is exact when every sentence of the batch is short enough to
enumerate its (ℓ − 1)! merge orders, otherwise REINFORCE over whole trees with
log p(tree) = Σ_t log p(merge_t | earlier merges) (:mod:`gradbench.families.sequence`).
No dropout: f is the deterministic loss of the tree.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradbench.families.sequence import CategoricalSequence, SequenceProblem

from .model import Batch, sequence

_CHUNK_VALUES = 1 << 25  # activation values one chunk of estimates may hold (about 256 MB in float64)


class ListOpsProblem(SequenceProblem):
    """E over merge orders of Σ_sentences cross-entropy, at frozen weights ``{name: [*shape]}``."""

    def __init__(self, weights: dict[str, Tensor], batch: Batch):
        self.shapes = {k: tuple(v.shape) for k, v in weights.items()}
        self.flat = torch.cat([v.detach().reshape(-1) for v in weights.values()])
        self.query = weights["query"].detach().clone()
        self.batch = batch
        size, longest = batch.tokens.shape
        dim = self.query.numel()
        # Per tree (evaluation of f) about 20·d values per node and step are kept: B·L²·20·d.
        self.chunk_limit = max(1, _CHUNK_VALUES // (size * longest * longest * 20 * dim))

    def parameters(self) -> dict[str, Tensor]:
        return {"query": self.query, "model": self.flat}

    def weights(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weight copies ``{name: [n, *shape]}`` from parameter-group copies ``{group: [n, P]}``."""
        model = params["model"]
        sizes = [torch.Size(s).numel() for s in self.shapes.values()]
        w = {k: part.reshape(model.shape[0], *s) for (k, s), part in zip(self.shapes.items(), model.split(sizes, dim=1))}
        query = params["query"]
        w["query"] = w["query"] + (query - query.detach())
        return w

    def distribution(self, params: dict[str, Tensor]) -> CategoricalSequence:
        return sequence(self.weights(params), self.batch)
