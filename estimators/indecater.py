"""IndeCateR (De Smet, Sansone & Zuidberg Dos Martires, NeurIPS 2023).

For independent categorical variables x_1..x_D, ∇θ E[f(x)] = Σ_d E_{x_{−d}}[Σ_k ∇p_d(k)·f(x_{−d}, x_d = k)].
From one sample x, every variable's categories are enumerated with the others held
at their sampled values: K·D evaluations of f per estimate (plus one at x itself,
which carries f's pathwise gradient), unbiased, and exact when there is a single
variable. Units (images in a batch) are handled at once: substituting variable j
substitutes it in every unit, each unit's f pairing with its own variable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradbench.capabilities import PerCategory
from gradbench.contract import Estimator, Surrogate
from gradbench.registry import estimators

from .score_function import sum_units

_BLOCK_VALUES = 1 << 24  # input values per batched call of f; bounds memory for wide problems


@estimators.register
@dataclass(frozen=True)
class IndeCateR(Estimator):
    """IndeCateR (De Smet et al. 2023): per-variable enumeration of the categories, others sampled. Unbiased, K·D + 1 evaluations."""

    name = "indecater"
    unbiased = True
    evaluations = PerCategory(plus=1)

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])  # [n, *units, *vars, K]
        n, K = x.shape[0], dist.K
        units = x.shape[1 : 1 + dist.units]
        flat = x.reshape(n, *units, -1, K)  # [n, *units, V, K]
        V = flat.shape[-2]
        eye = torch.eye(K, dtype=x.dtype, device=x.device)
        values = []  # f with variable j set to category k: [n, *units] per (j, k)
        block = max(1, _BLOCK_VALUES // max(1, K * flat.numel()))
        with torch.no_grad():
            for start in range(0, V, block):
                js = torch.arange(start, min(start + block, V), device=x.device)
                # [J, K, n, *units, V, K]: copy j·k has variable js[j] replaced by e_k.
                hit = torch.arange(V, device=x.device) == js[:, None]  # [J, V]
                hit = hit.reshape(len(js), 1, *([1] * (1 + len(units))), V, 1)
                onehot = eye.reshape(1, K, *([1] * (1 + len(units))), 1, K)
                inputs = torch.where(hit, onehot, flat)
                out = f(inputs.reshape(-1, *x.shape[1:]))  # f sees [J·K·n, *batch, K]
                values.append(out.reshape(len(js), K, n, *units))
        table = torch.cat(values)  # [V, K, n, *units]
        table = table.movedim(0, -1).movedim(0, -1)  # [n, *units, V, K]
        probs = dist.probs.reshape(n, *units, V, K)
        valid = probs.detach() > 0
        # Masked categories have p = 0 and no gradient; f there may be meaningless, so drop it.
        table = torch.where(valid, table, torch.zeros_like(table))
        enumerated = (table * (probs - probs.detach())).reshape(n, -1).sum(1)
        return Surrogate(sum_units(f(x)) + enumerated)
