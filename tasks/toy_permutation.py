"""toy-permutation: a Plackett–Luce ranking of k items with an exact gradient over the k! orderings.

z ~ PL(exp θ) over k ≤ 8 items, seen as a permutation matrix P (P[i, j] = 1 when item j
is at position i; see gradbench.families.permutation). Objectives:

quadratic: f(P) = ‖P − P*‖²_F against a target ranking P*. On permutation matrices this is
    2k − 2·(items at their target position); on relaxed (row-stochastic) matrices it is a
    genuine quadratic, which is what the relaxed sorts see.
dcg: f(P) = DCG = Σ_i d_i Σ_j P[i, j] g_j with gains g_j = 2^{r_j} − 1 for relevances r
    and discounts d_i = 1/log₂(i + 2) (i from 0), to be maximised. Not quadratic: linear in
    P, so a relaxed estimator's bias comes only from the mean of its relaxed matrix.

The exact gradient is autograd of Σ_z p_θ(z) f(z) over all k! orderings (the reference's
generic enumeration of the family's support): k = 8 is 40,320 orderings.

Defaults (for any k ≤ 8, the first k entries): log-scores spread over [−1, 1.2] whose
order is neither the target's nor its reverse, and relevances whose ranking is the
target, so neither objective's gradient is tiny or aligned with θ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gradbench.contract import Problem, Task
from gradbench.errors import SpecError
from gradbench.families.categorical import Objective
from gradbench.families.permutation import PlackettLuce, permutation_matrix
from gradbench.params import param
from gradbench.registry import tasks

MAX_ITEMS = 8  # 8! = 40,320 orderings: the exact reference stays well under a second
DEFAULT_LOGITS = (0.8, -0.3, 0.5, 1.2, -1.0, 0.1, -0.6, 0.4)
DEFAULT_RELEVANCE = (1.0, 3.0, 0.0, 2.0, 3.0, 1.0, 0.0, 2.0)
OBJECTIVES = ("quadratic", "dcg")


def ranking_by(values: tuple) -> tuple[int, ...]:
    """Items by decreasing value, ties by index: the target ranking the default relevances define."""
    return tuple(sorted(range(len(values)), key=lambda j: (-values[j], j)))


def dcg_weights(relevance: Tensor) -> Tensor:
    """``W [k, k]`` with DCG(P) = Σ_ij P_ij W_ij: discount of position i times gain of item j."""
    k = relevance.shape[-1]
    positions = torch.arange(k, dtype=relevance.dtype, device=relevance.device)
    discount = 1.0 / torch.log2(positions + 2)
    return discount.unsqueeze(-1) * (2.0 ** relevance - 1).unsqueeze(-2)


class PermutationProblem(Problem):
    """E_{z~PL(exp θ)} f(P_z) for log-scores θ ``[k]``; f on matrices ``[N, k, k] -> [N]``."""

    family = "permutation"

    def __init__(self, logits: Tensor, objective: str, target: Tensor, relevance: Tensor):
        self.logits = logits
        if objective == "quadratic":
            fn = lambda x: ((x - target) ** 2).sum((-2, -1))  # noqa: E731
        else:
            weights = dcg_weights(relevance)
            fn = lambda x: (x * weights).sum((-2, -1))  # noqa: E731
        self.objective = Objective(fn)

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return PlackettLuce(params["logits"])


@tasks.register
@dataclass(frozen=True)
class ToyPermutation(Task):
    """Plackett–Luce ranking of k ≤ 8 items, f = ‖P − P*‖² or DCG; exact gradient over the k! orderings."""

    name = "toy-permutation"
    families = ("permutation",)
    exact = True
    groups = ("logits",)
    k: int | None = param(None, f"number of items (2 to {MAX_ITEMS}; default: len(logits), or 5)",
                          kind="int", optional=True, ge=2, le=MAX_ITEMS)
    logits: tuple | None = param(None, "log-scores θ, one per item (default: the first k of a fixed spread)",
                                 kind="floats", optional=True, min_len=2)
    objective: str = param("quadratic", "'quadratic': ‖P − P*‖² against the target ranking; "
                           "'dcg': DCG against the relevances (not quadratic)", choices=OBJECTIVES)
    target: tuple | None = param(None, "target ranking P*: the item at each position, a permutation of 0..k−1 "
                                 "(default: items by decreasing relevance)", kind="ints", optional=True, ge=0)
    relevance: tuple | None = param(None, "relevance r_j ≥ 0 of each item for DCG (default: the first k of a "
                                    "fixed list)", kind="floats", optional=True)

    def __post_init__(self):
        self.resolved()  # validates; the fields keep what was given, so labels name only the changes

    def resolved(self) -> tuple[tuple, tuple, tuple]:
        """(logits, relevance, target) with defaults filled in for k items; SpecError if inconsistent."""
        k = self.k if self.k is not None else (len(self.logits) if self.logits is not None else 5)
        if k > MAX_ITEMS:
            raise SpecError(f"toy-permutation: {k} items would enumerate {math.factorial(k):,} orderings; "
                            f"use at most {MAX_ITEMS} (logits or k)")
        logits = self.logits if self.logits is not None else DEFAULT_LOGITS[:k]
        relevance = self.relevance if self.relevance is not None else DEFAULT_RELEVANCE[:k]
        for key, value in (("logits", logits), ("relevance", relevance)):
            if len(value) != k:
                raise SpecError(f"toy-permutation: {key} has {len(value)} values for {k} items; give one per item")
        if any(r < 0 for r in relevance):
            raise SpecError("toy-permutation: relevance must be ≥ 0 (gains are 2^r − 1)")
        target = self.target if self.target is not None else ranking_by(relevance)
        if sorted(target) != list(range(k)):
            raise SpecError(f"toy-permutation: target {list(target)} is not a permutation of 0..{k - 1}; "
                            "give the item at each position, each item once")
        return logits, relevance, target

    def problem(self, device, dtype):
        logits, relevance, target = self.resolved()
        as_tensor = lambda v: torch.tensor(v, device=device, dtype=dtype)  # noqa: E731
        matrix = permutation_matrix(torch.tensor(target, device=device), dtype)
        return PermutationProblem(as_tensor(logits), self.objective, matrix, as_tensor(relevance))
