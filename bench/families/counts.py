"""Count-valued variables: Poisson, binomial, negative binomial, geometric.

Parameters are ``[n, *batch]`` like every :class:`~gradbench.families.categorical.Distribution`,
and what is differentiated is the distribution's own parameter, as in the GenGS paper's
experiments: the rate λ (Poisson, group ``rate``) or the success probability p (the
others, group ``probs``). A gradient in log λ or logit p is this one times λ or p(1 − p).
pmfs and log_prob come from :mod:`torch.distributions`, whose conventions hold:
Binomial(N, p) counts successes in N trials; NegativeBinomial(r, p) counts successes
before the r-th failure (mean r·p/(1 − p)); Geometric(p) counts failures before the
first success (mean (1 − p)/p).

Sampling is the inverse CDF of one uniform per variable over the values 0..grid−1,
where ``grid`` is the smallest size with P(z ≥ grid) ≤ 1e-15 for every variable (the
whole support, N + 1 values, for the binomial). A uniform that lands in that tail gives
grid − 1, so samples are exact up to a mass of 1e-15. Each copy's CDF table (grid
values, float64) is searched with ``torch.searchsorted``; tables are built in blocks of
copies so memory stays bounded. The geometric inverts its CDF in closed form.

Truncated categorical (GenGS, and the categorical view that categorical estimators
see): the values 0..K−1 with π_k = pmf(k) for k < K − 1 and the last bin holding the
whole tail P(z ≥ K − 1) ("last-bin"), or π renormalised over 0..K−1 ("renormalize").
Either way the truncation misplaces the mass P(z ≥ K), reported as the dropped mass.
One-hot or relaxed weights w map back to counts by GenGS's linear transform z = Σ_k k·w_k.
Tail masses and levels are computed once on the host with scipy (accurate far into the
tail); they set tensor shapes, so they are never computed in a hot loop.

The last bin's log mass is log Σ_{K−1 ≤ k < M} pmf(k), a logsumexp of the log pmf, and not
log(1 − Σ_{k<K−1} pmf(k)): at the default level the tail is ≤ 1e-15, so 1 − Σ head is pure
rounding (geometric p = 0.3: log mass −34.10 on one copy, −34.17 batched, truly −34.24),
and a backward temperature above 1 magnifies that noise into gradients that differ between
engines by ~1e-9. The logsumexp is accurate in relative terms at every level and
elementwise in the batch. Its end M = max(K, grid) − 1 + ``span`` (at most a finite
support's size) leaves out at most TAIL_RTOL of the tail: ``span`` is the smallest with
P(z ≥ grid − 1 + span) ≤ TAIL_RTOL · P(z ≥ grid − 1) for every variable, from scipy's logsf
once on the host. For K ≤ grid the omitted mass is then ≤ TAIL_RTOL · P(z ≥ K − 1); for
K > grid the same span holds because the pmfs are log-concave (the ratio
P(z ≥ k + span)/P(z ≥ k) falls with k), except the negative binomial with r < 1, whose
ratio rises to p^span: its span is also made at least log TAIL_RTOL / log p.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from .categorical import Categorical, Distribution, _lead_to_front
from ..noise import NoiseSpec

COUNT_FAMILIES = ("poisson", "binomial", "negative-binomial", "geometric")
TAILS = ("last-bin", "renormalize")
SAMPLING_TAIL = 1e-15  # mass beyond the sampling grid (lumped onto its last value)
VIEW_EPS = SAMPLING_TAIL  # default truncation of a view: exactly the sampling grid, so views drop nothing the samplers keep
MIN_LEVEL = 2  # one category would make z a constant
TAIL_RTOL = 1e-17  # relative mass the last bin's sum may leave out (below a float64's rounding)
_TABLE_VALUES = 1 << 21  # CDF-table entries per block of copies while sampling
_ROUGH_LIMIT = float(1 << 26)  # beyond every table a run allows (bench/run.py MAX_TABLE_VALUES = 2^24)
_SPAN_CAP = 1 << 40  # longest tail span searched for (far beyond any table a run accepts)


class CountDistribution(Distribution):
    """Independent count variables with parameters ``[n, *batch]``.

    grid: sampling grid size (computed from the parameters when not given; a task
    computes it once so that building a distribution per chunk needs no host sync).
    view_level: K of the categorical view (default: ``truncation_level()``).
    span: how far past max(K, grid) − 1 the last bin's sum runs (computed when not given,
    like ``grid``; see the module docstring).
    """

    group: ClassVar[str]  # parameter group name in results
    support_size: int | None = None  # finite support (binomial: N + 1)

    def __init__(self, params: Tensor, grid: int | None = None, view_level: int | None = None,
                 span: int | None = None, units: int = 0):
        self.params = params
        self.units = units
        self._dist = self._torch(params)
        self.grid = grid if grid is not None else self.tail_level(SAMPLING_TAIL)
        self.span = span if span is not None else self.tail_span()
        self.view_level = view_level

    @abstractmethod
    def _torch(self, params: Tensor) -> torch.distributions.Distribution:
        """The torch.distributions object for parameters ``params``."""

    @abstractmethod
    def _scipy(self, params: np.ndarray):
        """The frozen scipy.stats distribution (same convention) for host-side tail masses."""

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.params.shape[1:])

    @property
    def mean(self) -> Tensor:
        return self._dist.mean

    @property
    def variance(self) -> Tensor:
        return self._dist.variance

    def sample_noise(self) -> NoiseSpec:
        return NoiseSpec("uniform", self.batch_shape)

    def sample(self, noise: Tensor) -> Tensor:
        # Inverse CDF: the first k with F(k) ≥ u, by binary search in a per-copy CDF table.
        u = _lead_to_front(noise, self.params).to(torch.float64)
        params = self.params.detach().to(torch.float64).reshape(-1)  # [R] copies × variables
        flat = u.reshape(-1, params.numel()).T.contiguous()  # [R, L]: L draws per copy
        z = torch.empty_like(flat)
        rows = max(1, _TABLE_VALUES // self.grid)
        for start in range(0, params.numel(), rows):  # blocks of copies bound the table's memory
            cdf = self._log_pmf_table(params[start : start + rows], self.grid).exp().cumsum(-1)
            z[start : start + rows] = torch.searchsorted(cdf, flat[start : start + rows]).clamp_max(self.grid - 1)
        return z.T.reshape(u.shape).to(self.params.dtype)

    def _log_pmf_table(self, params: Tensor, size: int) -> Tensor:
        """log pmf at 0..size−1 for parameters ``[R]`` -> ``[R, size]``, no gradient (sampling only).

        Families override it with the same values (tested) written so that lgamma runs on
        the ``size`` values once instead of on every copy: it is most of the sampling cost.
        """
        return self._torch(params.unsqueeze(-1)).log_prob(_values(params, size))

    def log_prob(self, x: Tensor) -> Tensor:
        return self._dist.log_prob(x)

    def log_pmf_head(self, size: int) -> Tensor:
        """log pmf at 0..size−1: ``[n, *batch, size]`` (differentiable in the parameters)."""
        values = torch.arange(size, dtype=self.params.dtype, device=self.params.device)
        return self._dist.log_prob(values.reshape(size, *[1] * self.params.dim())).movedim(0, -1)

    def support(self) -> Tensor:
        """The sampling grid 0..grid−1 (all but ≤ 1e-15 of the mass)."""
        return torch.arange(self.grid, dtype=self.params.dtype, device=self.params.device)

    # -- truncation (host side, once per measurement) ------------------------------------
    def tail_mass(self, level: int) -> float:
        """max over variables and copies of P(z ≥ level): the mass truncation at ``level`` drops."""
        frozen = self._scipy(self.params.detach().cpu().to(torch.float64).numpy())
        return float(np.max(frozen.sf(level - 1)))

    def tail_level(self, eps: float) -> int:
        """Smallest K with P(z ≥ K) ≤ eps for every variable (at most the support size)."""
        frozen = self._scipy(self.params.detach().cpu().to(torch.float64).numpy())
        # A rough size first: scipy's discrete isf hangs (geometric p = 1e-300) or returns NaN
        # (Poisson rates ≳ 1e12) far out, and tables that large are refused anyway, so such
        # parameters get the rough size (the caller's table limit then names the problem).
        rough = np.asarray(frozen.mean() + 40 * frozen.std() + 40, dtype=np.float64)
        if not np.all(np.isfinite(rough)) or float(np.max(rough)) > _ROUGH_LIMIT:
            level = int(np.max(np.nan_to_num(rough, nan=_ROUGH_LIMIT, posinf=_ROUGH_LIMIT))) + 1
            return level if self.support_size is None else min(level, self.support_size)
        k = np.asarray(frozen.isf(eps), dtype=np.float64)
        k = np.where(np.isfinite(k), k, np.floor(rough))
        for _ in range(100):  # scipy's discrete isf can be one off: step to the exact boundary
            up = frozen.sf(k) > eps
            down = (k > 0) & (frozen.sf(k - 1) <= eps)
            if not (up.any() or down.any()):
                break
            k = k + up - down
        level = int(np.max(k)) + 1
        return level if self.support_size is None else min(level, self.support_size)

    def tail_span(self) -> int:
        """Smallest s with P(z ≥ grid − 1 + s) ≤ TAIL_RTOL · P(z ≥ grid − 1) for every variable (module docstring)."""
        if self.grid > _ROUGH_LIMIT:  # a rough size (tail_level): refused by the caller's table limit
            return self.grid
        frozen = self._scipy(self.params.detach().cpu().to(torch.float64).numpy())
        start = self.grid - 1
        # scipy's isf fails this far out (Poisson: NaN), so search logsf: the smallest end with
        # log P(z ≥ end) ≤ bound, by doubling then bisection over integers, for all variables at once.
        # Where scipy cannot resolve the tail the search gives up at _SPAN_CAP and the span is the grid.
        bound = frozen.logsf(start - 1) + math.log(TAIL_RTOL)
        below = lambda end: ~(frozen.logsf(end - 1) > bound)  # noqa: E731  P(z ≥ end) small enough (NaN: give up)
        lo, hi = np.full(bound.shape, start), np.full(bound.shape, start + 1)
        while not below(hi).all():
            if hi.max() - start >= _SPAN_CAP:
                return self.grid
            lo, hi = np.where(below(hi), lo, hi), np.where(below(hi), hi, start + 2 * (hi - start))
        while (hi - lo > 1).any():  # the smallest end in (lo, hi] meets the bound
            mid = (lo + hi) // 2
            lo, hi = np.where(below(mid), lo, mid), np.where(below(mid), mid, hi)
        return max(int(np.max(hi)) - start, self._span_floor())

    def _span_floor(self) -> int:
        """A least span for levels beyond the grid where the pmf is not log-concave (module docstring)."""
        return 1

    def truncation_level(self, n: int | None = None, eps: float | None = None) -> int:
        """Level ``n`` if given, else the ``eps`` tail level; with neither, the whole of a finite support
        (nothing dropped) or the VIEW_EPS tail level. At least 2, at most the support size."""
        if n is None and eps is None and self.support_size is not None:
            return self.support_size
        level = max(MIN_LEVEL, n if n is not None else self.tail_level(VIEW_EPS if eps is None else eps))
        return level if self.support_size is None else min(level, self.support_size)

    def truncated_categorical(self, level: int, tail: str = "last-bin") -> Categorical:
        """The variables as categoricals over 0..level−1 (see the module docstring); logits ``[n, *batch, level]``."""
        if tail not in TAILS:
            raise ValueError(f"unknown tail handling {tail!r}; choose one of {TAILS}")
        if self.support_size is not None and level > self.support_size:
            raise ValueError(f"level {level} exceeds the support size {self.support_size}; use truncation_level()")
        if tail == "renormalize" or level == self.support_size:
            return Categorical(self.log_pmf_head(level), units=self.units)
        # The tail as a sum, not 1 − Σ head: relative accuracy at any size (module docstring).
        log_pmf = self.log_pmf_head(self._tail_end(level))
        rest = log_pmf[..., level - 1 :].logsumexp(-1, keepdim=True)
        return Categorical(torch.cat([log_pmf[..., : level - 1], rest], dim=-1), units=self.units)

    def _tail_end(self, level: int) -> int:
        """End of the last bin's sum at ``level`` (host arithmetic on ints, no sync)."""
        end = max(level, self.grid) - 1 + self.span
        return end if self.support_size is None else min(end, self.support_size)

    def table_size(self) -> int:
        """The largest table: the sampling grid or the categorical view's, tail sum included (host side)."""
        level = self.view_level if self.view_level is not None else self.truncation_level()
        return max(self.grid, self._tail_end(level))

    def as_categorical(self) -> Categorical:
        level = self.view_level if self.view_level is not None else self.truncation_level()
        return self.truncated_categorical(level)

    @staticmethod
    def from_categorical(x: Tensor) -> Tensor:
        """z = Σ_k k·w_k for one-hot or relaxed ``w [..., K]`` -> ``[...]``."""
        return x @ torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)


class Poisson(CountDistribution):
    """z ~ Poisson(λ); params: the rate λ > 0."""

    family = "poisson"
    group = "rate"

    def _torch(self, params):
        return torch.distributions.Poisson(params, validate_args=False)

    def _scipy(self, params):
        return stats.poisson(params)

    def _log_pmf_table(self, params, size):
        k = _values(params, size)
        return k * params.log().unsqueeze(-1) - params.unsqueeze(-1) - torch.lgamma(k + 1)


class Binomial(CountDistribution):
    """z ~ Binomial(N, p), successes in N trials; params: p ∈ (0, 1). Finite support: never truncated."""

    family = "binomial"
    group = "probs"

    def __init__(self, params: Tensor, total_count: int, **kwargs):
        self.total_count = int(total_count)
        self.support_size = self.total_count + 1
        super().__init__(params, **kwargs)

    def _torch(self, params):
        return torch.distributions.Binomial(self.total_count, probs=params, validate_args=False)

    def _scipy(self, params):
        return stats.binom(self.total_count, params)

    def _log_pmf_table(self, params, size):
        k, n, p = _values(params, size), self.total_count, params.unsqueeze(-1)
        log_choose = math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
        return log_choose + k * p.log() + (n - k) * torch.log1p(-p)


class NegativeBinomial(CountDistribution):
    """z ~ NegativeBinomial(r, p), successes before the r-th failure; params: p ∈ (0, 1)."""

    family = "negative-binomial"
    group = "probs"

    def __init__(self, params: Tensor, total_count: float, **kwargs):
        self.total_count = float(total_count)
        super().__init__(params, **kwargs)

    def _torch(self, params):
        return torch.distributions.NegativeBinomial(self.total_count, probs=params, validate_args=False)

    def _scipy(self, params):
        # scipy counts failures before n successes: swap the roles, p -> 1 − p.
        return stats.nbinom(self.total_count, 1 - params)

    def _span_floor(self):
        if self.total_count >= 1:  # log-concave: the span at the grid holds beyond it
            return 1
        # r < 1: P(z ≥ k + s)/P(z ≥ k) rises with k towards p^s, so p^s ≤ TAIL_RTOL bounds it everywhere.
        p = float(self.params.detach().max())
        return math.ceil(math.log(TAIL_RTOL) / math.log(p))

    def _log_pmf_table(self, params, size):
        k, r, p = _values(params, size), self.total_count, params.unsqueeze(-1)
        log_choose = torch.lgamma(r + k) - torch.lgamma(k + 1) - math.lgamma(r)
        return log_choose + r * torch.log1p(-p) + k * p.log()


class Geometric(CountDistribution):
    """z ~ Geometric(p), failures before the first success; params: p ∈ (0, 1)."""

    family = "geometric"
    group = "probs"

    def _torch(self, params):
        return torch.distributions.Geometric(probs=params, validate_args=False)

    def _scipy(self, params):
        return stats.nbinom(1, params)

    def sample(self, noise):
        # Closed-form inverse CDF, F(k) = 1 − (1 − p)^(k+1): k = ⌈log(1 − u)/log(1 − p)⌉ − 1.
        u = _lead_to_front(noise, self.params).to(torch.float64)
        p = self.params.detach().to(torch.float64)
        z = torch.ceil(torch.log1p(-u) / torch.log1p(-p)) - 1
        return z.clamp(0, self.grid - 1).to(self.params.dtype)


def _values(params: Tensor, size: int) -> Tensor:
    return torch.arange(size, dtype=params.dtype, device=params.device)


DISTRIBUTIONS = {cls.family: cls for cls in (Poisson, Binomial, NegativeBinomial, Geometric)}
