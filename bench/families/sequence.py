"""Sequences of dependent categorical decisions, and how estimators meet them.

A :class:`DecisionProcess` makes T decisions; decision t is a categorical over K
options whose logits depend on the parameters and on decisions 0..t-1 (a Gumbel
Tree-LSTM choosing which adjacent pair of nodes to merge next). Which options are
valid at each step is fixed in advance (``mask [*batch, T, K]``), so a decision
sequence can be enumerated without running the process.

:class:`CategoricalSequence` is the distribution of the whole sequence. An estimator
sees it in one of two ways, and no estimator needs code for either:

* **whole** (family ``categorical-sequence``; estimators of any family, "*"):
  sequences are sampled by sequential Gumbel-max from noise ``[*batch, T, K]``,
  scored with log p(x) = Σ_t log p(x_t | x_<t) and f is evaluated on them. RLOO's
  m draws are m whole sequences; this is the REINFORCE reference.
* **step by step** (its categorical view; categorical estimators): the estimator
  is applied to decision t's categorical with the objective
  f_t(x_t) = "run the rest of the process after choosing x_t", whose later
  decisions go through the estimator again (continuation passing). For
  straight-through estimators this is exactly how Choi et al. (2018) and the GST
  paper train: the forward pass builds the hard tree and gradients flow through
  every relaxed choice into the later choices' logits and into f. For REINFORCE it
  gives f·Σ_t ∇log p(x_t | x_<t), the whole-sequence estimator (tested).

An estimator that evaluates f m times per decision would need m^T evaluations,
and a state adapted per decision is ill-defined, so the step-by-step view admits
only stateless estimators with one evaluation of f (checked from declarations in
:func:`gradbench.registry.compatibility`). Step by step, the unit axes (sentences
of a batch) are folded into the estimate axis, so each unit's decision is paired
with that unit's own continuation value.
"""

from __future__ import annotations

import itertools
import math
import sys
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from ..contract import Estimator, Problem, Surrogate
from .categorical import Categorical, Distribution, Objective, one_hot_argmax
from ..errors import UserError
from ..noise import NoiseSpec
from ..registry import SEQUENCE_FAMILY

__all__ = ["SEQUENCE_FAMILY", "DecisionProcess", "CategoricalSequence", "SequenceProblem", "seen_stepwise",
           "enumerate_sequences"]

MAX_SEQUENCES = 200_000  # decision sequences enumerated for an exact gradient (summed over units)


class DecisionProcess(ABC):
    """T categorical decisions over K options for ``n`` parameter copies.

    Tensors of one run have shape ``[*lead, n, *batch, ...]``: ``lead`` extra sample
    axes (several sequences per copy), the copy axis, then the batch axes, the first
    ``units`` of which index the terms f is a sum of (sentences).

    mask: bool ``[*batch, T, K]``, True where option k is valid at step t; every
        step of every variable has at least one valid option.
    relaxed / differentiable: the process accepts relaxed choices (points of the
        simplex) and is differentiable in them.
    """

    n: int
    batch_shape: tuple[int, ...]
    units: int
    mask: Tensor
    relaxed: bool = True
    differentiable: bool = True

    @abstractmethod
    def start(self, lead: tuple[int, ...] = ()) -> Any:
        """The state before the first decision, for ``lead`` extra sample axes."""

    @abstractmethod
    def propose(self, carry: Any, t: int) -> tuple[Tensor, Callable[[Tensor], Any]]:
        """Logits of decision t, ``[*lead, n, *batch, K]`` (any finite value where masked),
        and the function taking a choice ``x`` of the same shape (one-hot or relaxed)
        to the next state."""

    @abstractmethod
    def finish(self, carry: Any) -> Tensor:
        """The objective after the last decision, ``[*lead, n, *batch[:units]]``."""


class CategoricalSequence(Distribution):
    """The distribution of a :class:`DecisionProcess`'s decisions ``x [*batch, T, K]``.

    params: one parameter tensor of the copies, ``[n, ...]`` (its leading axis, dtype
    and device are the process's).
    """

    family = SEQUENCE_FAMILY

    def __init__(self, process: DecisionProcess, params: Tensor):
        self.process = process
        self.params = params
        self.units = process.units
        self.mask = process.mask
        self._last: tuple[Tensor, tuple[Tensor, Any]] | None = None

    @property
    def n(self) -> int:
        return self.process.n

    @property
    def T(self) -> int:
        return self.mask.shape[-2]

    @property
    def K(self) -> int:
        return self.mask.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return (*self.process.batch_shape, self.T)

    def sample_noise(self) -> NoiseSpec:
        return NoiseSpec("gumbel", (*self.batch_shape, self.K))

    def sample(self, noise: Tensor) -> Tensor:
        """Sequential Gumbel-max: noise ``[n, *lead, *batch, T, K]`` -> one-hots ``[*lead, n, *batch, T, K]``."""
        lead = noise.dim() - 1 - len(self.batch_shape) - 1
        gumbel = noise.movedim(0, lead)
        with torch.no_grad():
            carry = self.process.start(tuple(gumbel.shape[:lead]))
            choices = []
            for t in range(self.T):
                logits, advance = self.process.propose(carry, t)
                x = one_hot_argmax(self._masked(logits, t) + gumbel[..., t, :])
                choices.append(x)
                carry = advance(x)
        return self._stack(choices, gumbel)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x_t | x_<t) per decision: ``x [*lead, n, *batch, T, K] -> [*lead, n, *batch, T]``."""
        return self._replay(x)[0]

    def support(self) -> None:
        """None: the decisions are not independent; :meth:`SequenceProblem.exact_gradient` enumerates them."""
        return None

    @property
    def objective(self) -> Objective:
        """f of whole sequences for these parameter copies: ``x [N, *batch, T, K] -> [N, *units]``, N = lead·n."""

        def fn(x: Tensor) -> Tensor:
            shaped = x if x.shape[0] == self.n else x.reshape(-1, self.n, *x.shape[1:])
            value = self.process.finish(self._replay(shaped)[1])
            return value.reshape(x.shape[0], *value.shape[1 + shaped.dim() - x.dim():])

        return Objective(fn)

    def step_template(self) -> Categorical:
        """Every decision as a categorical ``[n, *batch, T, K]`` (zero logits, the static mask).

        What a step-by-step estimator's noise and initial state are declared for; its
        logits are placeholders, never used to estimate anything.
        """
        logits = torch.zeros(self.n, *self.batch_shape, self.K, dtype=self.params.dtype, device=self.params.device)
        return Categorical(logits, self.mask, self.units)

    def surrogate(self, estimator: Estimator, noise: dict[str, Tensor], state: Any, stepwise: bool) -> Surrogate:
        """The estimator's surrogate ``[n]``, over whole sequences or one decision at a time."""
        if not stepwise:
            return estimator.surrogate(self, self.objective, noise, state)
        with _recursion_room(8 * self.T + 200):
            return Surrogate(self._stepwise(estimator, noise, state))

    # -- internals ----------------------------------------------------------------------
    def _masked(self, logits: Tensor, t: int) -> Tensor:
        return logits.masked_fill(~self.mask[..., t, :], float("-inf"))

    def _stack(self, choices: list[Tensor], like: Tensor) -> Tensor:
        if choices:
            return torch.stack(choices, dim=-2)
        return like.new_zeros(*like.shape[:-2], 0, like.shape[-1])

    def _replay(self, x: Tensor) -> tuple[Tensor, Any]:
        """Run the process on given choices ``x [*lead, n, *batch, T, K]``: (log p per step, final state).

        The last replay is kept: REINFORCE asks for f(x) and log p(x) of the same x,
        and one pass (one graph) serves both.
        """
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        lead = x.dim() - 1 - len(self.batch_shape) - 1
        carry = self.process.start(tuple(x.shape[:lead]))
        scores = []
        for t in range(self.T):
            logits, advance = self.process.propose(carry, t)
            choice = x[..., t, :]
            log_p = torch.log_softmax(self._masked(logits, t), dim=-1)
            # where, not log_p·x: -inf·0 would be nan at masked options.
            scores.append(torch.where(choice > 0, log_p, torch.zeros_like(log_p)).sum(-1))
            carry = advance(choice)
        log_p = torch.stack(scores, dim=-1) if scores else x.new_zeros(x.shape[:-2])
        self._last = (x, (log_p, carry))
        return log_p, carry

    def _stepwise(self, estimator: Estimator, noise: dict[str, Tensor], state: Any) -> Tensor:
        process, n, batch = self.process, self.n, self.process.batch_shape
        units = batch[: self.units]
        folded = n * math.prod(units)  # copies × units: one categorical per (copy, unit) and step
        tail = (*batch, self.T, self.K)
        for name, value in noise.items():
            if tuple(value.shape[value.dim() - len(tail):]) != tail:
                raise UserError(f"{estimator.name} draws noise {name!r} of shape {tuple(value.shape[1:])}, not per "
                                f"decision (ending in {tail}); it cannot be applied one decision at a time")

        def step_noise(t: int) -> dict[str, Tensor]:
            out = {}
            for name, value in noise.items():
                value = value.select(-2, t)  # [n, *lead, *batch, K]
                first = value.dim() - len(batch) - 1  # the first unit axis
                value = value.movedim(tuple(range(first, first + self.units)), tuple(range(1, 1 + self.units)))
                out[name] = value.reshape(folded, *value.shape[1 + self.units:])
            return out

        def run(carry: Any, t: int) -> Tensor:
            """Objective ``[n, *units]`` of the rest of the process from step t."""
            if t == self.T:
                return process.finish(carry)
            logits, advance = process.propose(carry, t)
            mask = self.mask[..., t, :].expand(logits.shape)
            dist = Categorical(logits.reshape(folded, *logits.shape[1 + self.units:]),
                               mask.reshape(folded, *mask.shape[1 + self.units:]))

            def rest(x: Tensor) -> Tensor:
                if x.shape[0] != folded:
                    raise UserError(f"{estimator.name} evaluates f on several choices per decision; "
                                    "it cannot be applied one decision at a time")
                return run(advance(x.reshape(logits.shape)), t + 1).reshape(folded)

            objective = Objective(rest)
            return estimator.surrogate(dist, objective, step_noise(t), state).value.reshape(n, *units)

        return run(process.start(), 0).reshape(n, -1).sum(1)


def seen_stepwise(estimator: Estimator) -> bool:
    """Whether ``estimator`` meets a decision sequence one categorical at a time (its categorical view)."""
    families = estimator.families
    return "*" not in families and SEQUENCE_FAMILY not in families and "categorical" in families


@contextmanager
def _recursion_room(frames: int):
    """Each decision adds a few Python frames to the continuation chain; make room for long sequences."""
    old = sys.getrecursionlimit()
    if frames > old:
        sys.setrecursionlimit(frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


class SequenceProblem(Problem):
    """A problem whose variables are a decision sequence; exact by enumerating valid sequences.

    ``distribution`` returns a :class:`CategoricalSequence`. The objective depends on
    the parameter copies (a network's output layer), so it is the distribution's;
    ``objective`` here is that of the frozen parameters.
    """

    family: ClassVar[str] = SEQUENCE_FAMILY
    max_sequences: int = MAX_SEQUENCES

    @property
    def objective(self) -> Objective:
        frozen = {k: v.detach().unsqueeze(0) for k, v in self.parameters().items()}
        return self.distribution(frozen).objective

    def exact_gradient(self) -> dict[str, Tensor] | None:
        """∇ Σ_units Σ_x p(x) f(x) over every valid sequence of each unit, or None if too many."""
        return enumerate_sequences(self, self.max_sequences)


def valid_sequences(mask: Tensor) -> list[Tensor]:
    """Every valid decision sequence of each unit: ``mask [U, T, K]`` -> U tensors ``[C_u, T]`` of indices."""
    out = []
    for unit in mask.cpu():
        options = [torch.nonzero(step).flatten().tolist() for step in unit]
        out.append(torch.tensor(list(itertools.product(*options)), dtype=torch.long, device="cpu").reshape(-1, len(options)))
    return out


def count_sequences(mask: Tensor) -> list[int]:
    """Number of valid sequences per unit, Π_t (valid options at t), without listing them."""
    counts = mask.sum(-1)
    return [math.prod(int(c) for c in unit) for unit in counts.reshape(-1, counts.shape[-1]).cpu()]


def enumerate_sequences(problem: Problem, max_sequences: int = MAX_SEQUENCES, rows: int = 4096) -> dict[str, Tensor] | None:
    """Exact gradient of E[Σ_units f] when every batch axis is a unit and the sequences are few.

    Units are independent given the parameters, so each unit's sequences are
    enumerated on their own (Σ_u C_u terms, not Π_u C_u); they are evaluated in
    blocks of ``rows`` sequences per unit to bound memory.
    """
    params = {k: v.detach().unsqueeze(0).clone().requires_grad_(True) for k, v in problem.parameters().items()}
    dist = problem.distribution(params)
    if not isinstance(dist, CategoricalSequence) or len(dist.process.batch_shape) != dist.units:
        return None
    unit_shape = dist.process.batch_shape
    mask = dist.mask.reshape(-1, dist.T, dist.K)
    if sum(count_sequences(mask)) > max_sequences:
        return None
    sequences = valid_sequences(mask)
    most = max(len(s) for s in sequences)
    grads = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, most, rows):
        stop = min(start + rows, most)
        # The sequences are listed on the CPU (valid_sequences); one_hot(...).to(params) moves them.
        which = torch.arange(start, stop, device="cpu")
        index = torch.stack([s[which.clamp(max=len(s) - 1)] for s in sequences], dim=1)  # [C, U, T]
        counted = torch.stack([which < len(s) for s in sequences], dim=1)  # [C, U]
        x = torch.nn.functional.one_hot(index, dist.K).to(dist.params).reshape(stop - start, 1, *unit_shape, dist.T, dist.K)
        dist = problem.distribution(params)
        log_p = dist.log_prob(x).sum(-1).reshape(stop - start, -1)  # [C, U]
        fx = dist.objective(x, lead=1).reshape(stop - start, -1)
        weight = torch.where(counted.to(log_p.device), log_p.exp(), torch.zeros_like(log_p))
        expectation = (weight * fx).sum()
        for (k, p), g in zip(params.items(), torch.autograd.grad(expectation, list(params.values()), allow_unused=True)):
            if g is not None:
                grads[k] += g
    return {k: g.reshape(-1).detach().to(torch.float64) for k, g in grads.items()}
