"""The unordered set estimator (Kool, van Hoof & Welling, ICLR 2020): k samples without replacement.

For one categorical variable, the Gumbel-top-k of θ + G (the sample's own Gumbel
vector, so its first element is the exact sample D) is an ordered sample of k
distinct categories S without replacement. With p(S) the probability of the
unordered set S and p^{D∖A}(T) that of T under p with the categories A removed
(renormalised), the estimator with its built-in baseline is

    ĝ = Σ_{s∈S} ∇p(s)·R(S, s)·(f(s) − B_s),   R(S, s) = p^{D∖s}(S∖s) / p(S),
    B_s = p(s)·f(s) + Σ_{s'∈S∖s} p(s')·p^{D∖{s,s'}}(S∖{s,s'}) / p^{D∖s}(S∖s)·f(s'),

B_s being the unordered set estimate of E f from the other k − 1 samples given s,
so the baseline term has expectation zero. Without it (``baseline=False``) it is
the plain without-replacement REINFORCE Σ_{s∈S} ∇p(s)·R(S, s)·f(s). Both are
unbiased; with k = K every category is in S, R = 1, B = E f and ĝ is the exact
gradient. p(S) sums over the k! orders, Π_i p(s_i)/(1 − Σ_{j<i} p(s_j)), so k is
kept small.

Several variables: the paper's estimator is for one categorical (or a sequence via
stochastic beam search). Here each variable d gets its own without-replacement set
S_d with the other variables held at the exact sample x (independent of S_d, as
their Gumbel noise is), which keeps it unbiased: ∇θ_d E f = E_x[∇θ_d E_{x_d} f].
That costs k evaluations of f per variable, k·D + 1 per estimate (one for f(x)); on
a single variable it is exactly the paper's estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import torch
import torch.nn.functional as F
from torch import Tensor

from gradbench.capabilities import PerVariable
from gradbench.contract import Estimator, Surrogate
from gradbench.families.categorical import Distribution, Objective
from gradbench.params import param
from gradbench.registry import estimators

from .score_function import sum_units

_BLOCK_VALUES = 1 << 24  # input values per batched call of f; bounds memory for wide problems


def per_variable(dist: Distribution, x: Tensor) -> Tensor:
    """``[n, *units, *vars, K] -> [n, *units, V, K]``: each unit's variables on one axis."""
    return x.reshape(x.shape[0], *x.shape[1 : 1 + dist.units], -1, x.shape[-1])


def substituted_values(dist: Distribution, f: Objective, x: Tensor, cats: Tensor) -> Tensor:
    """f with one variable replaced: ``[n, *units, V, J]``, entry (v, j) = f(x with variable v = cats[..., v, j]).

    x: one-hot ``[n, *batch, K]``. cats: category indices ``[n, *units, V, J]``.
    Variable v is replaced in every unit at once; f is additive over units, so each
    unit's value pairs with its own variable. No gradient (the values are weights).
    """
    flat = per_variable(dist, x)  # [n, *u, V, K]
    n, V, K = flat.shape[0], flat.shape[-2], flat.shape[-1]
    units = flat.shape[1:-2]
    J = cats.shape[-1]
    onehots = F.one_hot(cats, K).to(x.dtype)  # [n, *u, V, J, K]
    lead = (1,) * (1 + len(units))
    block = max(1, _BLOCK_VALUES // max(1, J * flat.numel()))
    values = []
    with torch.no_grad():
        for start in range(0, V, block):
            vs = torch.arange(start, min(start + block, V), device=x.device)
            # [B, J, n, *u, 1, K]: the replacement one-hot of variable vs[b], choice j.
            repl = onehots.index_select(-3, vs).movedim(-3, 0).movedim(-2, 1).unsqueeze(-2)
            hit = (torch.arange(V, device=x.device) == vs[:, None]).reshape(len(vs), 1, *lead, V, 1)
            inputs = torch.where(hit, repl, flat)  # [B, J, n, *u, V, K]
            out = f(inputs.reshape(-1, *x.shape[1:]))
            values.append(out.reshape(len(vs), J, n, *units))
    table = torch.cat(values)  # [V, J, n, *u]
    return table.movedim(0, -1).movedim(0, -1)


def set_probability(p: Tensor, members: tuple[int, ...], removed: Tensor | float = 0.0) -> Tensor:
    """Probability of drawing the unordered set ``members`` (indices into ``p [..., k]``) without replacement,
    from p with mass ``removed`` taken out and renormalised: Σ over orders of Π_i p_i/(1 − removed − Σ_{j<i} p_j)."""
    total = torch.zeros_like(p[..., 0])
    if not members:
        return total + 1
    tiny = torch.finfo(p.dtype).tiny
    for order in permutations(members):
        prob, taken = torch.ones_like(total), removed + torch.zeros_like(total)
        for i in order:
            prob = prob * p[..., i] / (1 - taken).clamp(min=tiny)
            taken = taken + p[..., i]
        total = total + prob
    return total


def unordered_set_weights(p: Tensor, values: Tensor, baseline: bool) -> Tensor:
    """Per-sample weights R(S, s)·(f(s) − B_s) ``[..., k]`` for probabilities and values ``[..., k]`` of S."""
    k = p.shape[-1]
    every = tuple(range(k))
    p_set = set_probability(p, every)
    weights = []
    for s in every:
        rest = tuple(i for i in every if i != s)
        p_rest = set_probability(p, rest, p[..., s])
        ratio = p_rest / p_set
        if not baseline:
            weights.append(ratio * values[..., s])
            continue
        b = p[..., s] * values[..., s]
        for t in rest:
            others = tuple(i for i in rest if i != t)
            b = b + p[..., t] * set_probability(p, others, p[..., s] + p[..., t]) / p_rest * values[..., t]
        weights.append(ratio * (values[..., s] - b))
    return torch.stack(weights, -1)


@estimators.register
@dataclass(frozen=True)
class UnorderedSet(Estimator):
    """Unordered set estimator (Kool et al. 2020): k samples without replacement (Gumbel-top-k), built-in baseline. Unbiased, min(k, K)·D + 1 evaluations.

    Per variable, others held at the exact sample; with k = K it is the exact gradient.
    """

    name = "unordered-set"
    unbiased = True
    evaluations = PerVariable("k", plus=1)
    masks = False  # a set that must include probability-zero categories has p(S) = 0
    k: int = param(4, "samples without replacement per variable (capped at the number of categories); "
                      "p(S) sums over k! orders", ge=1, le=7)
    baseline: bool = param(True, "the built-in baseline B_s (else plain without-replacement REINFORCE)")


    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        k = min(self.k, dist.K)
        scores = per_variable(dist, dist.logits.detach() + noise["sample"])
        chosen = scores.topk(k, dim=-1).indices  # [n, *u, V, k], chosen[..., 0] is x's category
        values = substituted_values(dist, f, x, chosen)
        log_p = per_variable(dist, torch.log_softmax(dist.logits, dim=-1)).gather(-1, chosen)
        p = log_p.detach().exp()
        weights = unordered_set_weights(p, values, self.baseline)
        # Σ_s ∇p(s)·w_s: value zero, gradient the estimate.
        estimate = (weights.detach() * (log_p.exp() - p)).reshape(x.shape[0], -1).sum(1)
        return Surrogate(sum_units(f(x)) + estimate)
