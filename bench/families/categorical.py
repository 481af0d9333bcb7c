"""Discrete distributions as estimators see them: parameters with a leading estimate axis.

Every distribution holds parameters of shape ``[n, *batch(, K)]``: ``n`` independent
copies, one per gradient estimate, so one backward pass yields ``n`` separate
gradients. Sampling takes explicit noise (no hidden random state), and the first
``units`` batch axes are those over which the objective is a sum (images in a
batch, say): score-function estimators pair each unit's value of f with that
unit's log-probability only. pmfs and log_prob come from :mod:`torch.distributions`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor

from ..noise import NoiseSpec


class Distribution(ABC):
    """Common interface; see :class:`Categorical` and :class:`Bernoulli`."""

    family: ClassVar[str]
    units: int
    params: Tensor

    @property
    def n(self) -> int:
        """Number of estimate copies (the leading axis)."""
        return self.params.shape[0]

    @property
    @abstractmethod
    def batch_shape(self) -> tuple[int, ...]:
        """Shape of the variables of one estimate (without the leading n)."""

    @abstractmethod
    def sample_noise(self) -> NoiseSpec:
        """Noise for one exact sample of one estimate."""

    @abstractmethod
    def sample(self, noise: Tensor) -> Tensor:
        """Exact sample from noise ``[n, *lead, *noise_shape]`` -> ``[*lead, n, ...]``; no gradient."""

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Log-probability per variable: ``x [*lead, n, *batch(, K)] -> [*lead, n, *batch]``."""

    def log_prob_units(self, x: Tensor) -> Tensor:
        """Log-probability summed within each unit: ``-> [*lead, n, *batch[:units]]``."""
        lp = self.log_prob(x)
        var_dims = len(self.batch_shape) - self.units
        return lp.sum(dim=tuple(range(-var_dims, 0))) if var_dims else lp

    @abstractmethod
    def support(self) -> Tensor:
        """Values of one variable, ``[V, *event]`` (for enumeration)."""

    def as_categorical(self) -> Categorical | None:
        """The same variables as categoricals (None if they have no such view)."""
        return None

    def table_size(self) -> int:
        """Values one variable's sampling table or categorical view holds (memory checks before a run)."""
        return 0

    @staticmethod
    def from_categorical(x: Tensor) -> Tensor:
        """Map one-hot (or relaxed) samples of the categorical view to native values."""
        return x


class Categorical(Distribution):
    """Categorical variables with one-hot samples.

    logits: ``[n, *batch, K]``. mask: bool, broadcastable to logits, True where a
    category is valid (ListOps' merge positions); invalid categories get
    probability zero and logit -inf.
    """

    family = "categorical"

    def __init__(self, logits: Tensor, mask: Tensor | None = None, units: int = 0):
        self.params = logits
        self.mask = mask
        self.units = units
        self.logits = logits if mask is None else logits.masked_fill(~mask, float("-inf"))
        self._dist = torch.distributions.OneHotCategorical(logits=self.logits, validate_args=False)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.logits.shape[1:-1])

    @property
    def K(self) -> int:
        return self.logits.shape[-1]

    @property
    def probs(self) -> Tensor:
        return self._dist.probs

    def sample_noise(self) -> NoiseSpec:
        return NoiseSpec("gumbel", (*self.batch_shape, self.K))

    def sample(self, noise: Tensor) -> Tensor:
        # Gumbel-max: argmax(logits + G) is an exact sample.
        return one_hot_argmax(self.logits.detach() + _lead_to_front(noise, self.logits))

    def log_prob(self, x: Tensor) -> Tensor:
        return self._dist.log_prob(x)

    def support(self) -> Tensor:
        return torch.eye(self.K, dtype=self.logits.dtype, device=self.logits.device)

    def as_categorical(self) -> Categorical:
        return self


class Bernoulli(Distribution):
    """Independent binary variables; samples are 0./1. floats.

    logits: ``[n, *batch]``. The categorical view has logits ``[0, θ]`` so that
    softmax gives p(b=1) = σ(θ); its one-hot sample maps back to b = D[..., 1].
    """

    family = "bernoulli"

    def __init__(self, logits: Tensor, units: int = 0):
        self.params = logits
        self.logits = logits
        self.units = units
        self._dist = torch.distributions.Bernoulli(logits=logits, validate_args=False)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.logits.shape[1:])

    @property
    def probs(self) -> Tensor:
        return self._dist.probs

    def sample_noise(self) -> NoiseSpec:
        return NoiseSpec("uniform", self.batch_shape)

    def sample(self, noise: Tensor) -> Tensor:
        # b = 1[u < σ(θ)], the convention ARM and DisARM use.
        u = _lead_to_front(noise, self.logits)
        return (u < torch.sigmoid(self.logits.detach())).to(self.logits.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        return self._dist.log_prob(x)

    def support(self) -> Tensor:
        return torch.tensor([0.0, 1.0], dtype=self.logits.dtype, device=self.logits.device)

    def as_categorical(self) -> Categorical:
        logits2 = torch.stack([torch.zeros_like(self.logits), self.logits], dim=-1)
        return Categorical(logits2, units=self.units)

    @staticmethod
    def from_categorical(x: Tensor) -> Tensor:
        return x[..., 1]


def _lead_to_front(noise: Tensor, params: Tensor) -> Tensor:
    """Noise ``[n, *lead, *shape]`` -> ``[*lead, n, *shape]`` so it broadcasts with params ``[n, *shape]``."""
    extra = noise.dim() - params.dim()
    return noise.movedim(0, extra) if extra > 0 else noise


def one_hot_argmax(scores: Tensor) -> Tensor:
    """One-hot of the argmax over the last axis, in the scores' dtype."""
    index = scores.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(scores).scatter_(-1, index, 1.0)


@dataclass(frozen=True)
class Objective:
    """f: ``x [N, *batch(, K)] -> [N, *batch[:units]]``, additive over units.

    Whether f accepts relaxed points or is differentiable is the task's declaration
    (``Task.relaxed_f``, ``Task.differentiable_f``), checked before a run, not a property of f.
    log_joint: for latent-variable tasks that offer importance weights, log p(x, z)
        per unit (same shapes as fn); multi-sample estimators (VIMCO) combine it
        with the distribution's own log q(z) into w = p(x, z)/q(z).
    context: per-unit inputs ``[*batch[:units], C]`` that an input-dependent
        baseline (NVIL's c_ψ(x)) may condition on, such as the images of an image
        batch; None when the problem has no input. Never differentiated.
    """

    fn: Callable[[Tensor], Tensor]
    log_joint: Callable[[Tensor], Tensor] | None = None
    context: Tensor | None = None

    def __call__(self, x: Tensor, lead: int = 0) -> Tensor:
        """Evaluate on ``x`` with ``lead`` extra leading sample axes before the estimate axis."""
        return _with_lead(self.fn, x, lead)

    def joint(self, x: Tensor, lead: int = 0) -> Tensor:
        """log p(x, z) per unit (tasks offering importance weights), with ``lead`` as in ``__call__``."""
        if self.log_joint is None:
            raise TypeError("this objective offers no log_joint (the task does not offer importance_weights)")
        return _with_lead(self.log_joint, x, lead)


def _with_lead(fn: Callable[[Tensor], Tensor], x: Tensor, lead: int) -> Tensor:
    if lead == 0:
        return fn(x)
    shape = x.shape[: lead + 1]
    out = fn(x.reshape(-1, *x.shape[lead + 1 :]))
    return out.reshape(*shape, *out.shape[1:])
