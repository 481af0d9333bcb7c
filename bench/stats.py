"""Streaming sufficient statistics of gradient estimates, and the metrics they give.

Everything is a function of three things per estimate g_s of a parameter group of
dimension P: the running sum of g_s, its squared norm ‖g_s‖² and its inner
product ⟨g_s, r⟩ with the reference r. Memory is one P-vector per group whatever
the number of estimates S.

Intervals (95%):
  variance, variance_per_element, seconds_per_estimate, work_normalized_variance:
      batch means over (up to) 20 contiguous batches of estimates, t quantile;
      within-batch variances are unbiased, so the spread is honest for any S ≥ 40.
  mse, cosine: mean of an i.i.d. per-estimate scalar (‖g_s − r‖², cos(g_s, r)), t interval.
  bias_norm, relative_bias: ‖m − r‖ ± z·sqrt(V/S + V_ref), where V_ref is the trace of
      the reference's own covariance (0 for an exact reference). By the triangle
      inequality and Székely & Bakirov (2003, a weighted sum of χ²₁ never has a heavier
      tail above the 95% point than one χ²₁), this covers the true bias with ≥ 95%
      probability under the Gaussian approximation of the mean, whatever the covariance.
  snr: ‖m‖ with the same triangle interval, divided by the variance interval (conservative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from scipy import stats as sps
from torch import Tensor

from .contract import Chunk

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Metric:
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan


@dataclass
class _Batch:
    n: int = 0
    total: Tensor | None = None
    sq: Tensor | float = 0.0
    q: Tensor | float = 0.0
    cos: Tensor | float = 0.0
    seconds: float = 0.0


@dataclass
class GroupStats:
    """Accumulates :class:`Chunk` statistics of one parameter group.

    reference: ``[P]`` float64 (or None); feeds ‖g − r‖² and cos(g, r).
    Chunks are added with the index of the contiguous batch they belong to;
    batches must arrive in order (the runner never splits a chunk across batches).
    """

    dim: int
    reference: Tensor | None
    total: Tensor | None = None
    n: int = 0
    sq: Tensor | float = 0.0
    q_sum: Tensor | float = 0.0
    q_sq: Tensor | float = 0.0
    cos_sum: Tensor | float = 0.0
    cos_sq: Tensor | float = 0.0
    nonfinite: Tensor | int = 0
    seconds: float = 0.0
    batches: list[tuple] = field(default_factory=list)
    _batch: _Batch = field(default_factory=_Batch)
    _batch_index: int = -1

    def __post_init__(self):
        if self.reference is not None:
            self.reference = self.reference.to(torch.float64)
        self._rr = float(self.reference @ self.reference) if self.reference is not None else 0.0

    def add(self, chunk: Chunk, batch: int, seconds: float) -> None:
        if batch != self._batch_index:
            self._close_batch()
            self._batch_index = batch
        total = chunk.total.to(torch.float64)
        sq = chunk.sq.to(torch.float64)
        dot = chunk.dot.to(torch.float64)
        q = sq - 2 * dot + self._rr  # ‖g_s − r‖²
        rnorm = math.sqrt(self._rr)
        cos = torch.where(sq > 0, dot / (sq.clamp_min(1e-300).sqrt() * max(rnorm, 1e-300)), torch.zeros_like(sq))
        self.nonfinite = self.nonfinite + (~torch.isfinite(sq)).sum()
        self.total = total if self.total is None else self.total + total
        self.n += sq.numel()
        self.sq = self.sq + sq.sum()
        self.q_sum, self.q_sq = self.q_sum + q.sum(), self.q_sq + (q * q).sum()
        self.cos_sum, self.cos_sq = self.cos_sum + cos.sum(), self.cos_sq + (cos * cos).sum()
        self.seconds += seconds
        b = self._batch
        b.n += sq.numel()
        b.total = total.clone() if b.total is None else b.total + total
        b.sq, b.q, b.cos, b.seconds = b.sq + sq.sum(), b.q + q.sum(), b.cos + cos.sum(), b.seconds + seconds

    def _close_batch(self) -> None:
        b = self._batch
        if b.n:
            # Only scalars survive a batch: memory stays one P-vector whatever S is.
            self.batches.append((b.n, b.sq, (b.total @ b.total), b.q, b.cos, b.seconds))
        self._batch = _Batch()

    def finish(self, reference_variance: float = 0.0) -> GroupSummary:
        """Metrics with intervals; ``reference_variance`` is the trace covariance of r's own error."""
        self._close_batch()
        return summarize(self, reference_variance)


@dataclass
class GroupSummary:
    n: int
    dim: int
    metrics: dict[str, Metric]
    mean: Tensor | None
    status: str = "ok"
    message: str = ""


def _t95(dof: int) -> float:
    return float(sps.t.ppf(0.975, dof)) if dof > 0 else math.nan


def _mean_ci(total: float, total_sq: float, n: int) -> Metric:
    mean = total / n
    if n < 2:
        return Metric(mean)
    var = max(total_sq - n * mean * mean, 0.0) / (n - 1)
    half = _t95(n - 1) * math.sqrt(var / n)
    return Metric(mean, mean - half, mean + half)


def _batch_ci(point: float, values: list[float]) -> Metric:
    values = [v for v in values if math.isfinite(v)]
    if len(values) < 2:
        return Metric(point)
    m = len(values)
    mean = sum(values) / m
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (m - 1))
    half = _t95(m - 1) * sd / math.sqrt(m)
    return Metric(point, point - half, point + half)


def summarize(acc: GroupStats, reference_variance: float = 0.0) -> GroupSummary:
    n, dim = acc.n, acc.dim
    nonfinite = int(acc.nonfinite)
    if nonfinite:
        return GroupSummary(n, dim, {}, None, "failed",
                            f"{nonfinite} of {n} estimates were not finite (NaN or inf); nothing was averaged")
    if n < 2:
        return GroupSummary(n, dim, {}, None, "failed", f"need at least 2 estimates, got {n}")
    if acc.reference is not None and not bool(torch.isfinite(acc.reference).all()):
        return GroupSummary(n, dim, {}, None, "failed", "the reference gradient is not finite (NaN or inf): the "
                            "task's values overflow; nothing was compared against it")
    mean = acc.total / n
    total_norm2 = float(acc.total @ acc.total)
    variance = max(float(acc.sq) - total_norm2 / n, 0.0) / (n - 1)
    batch_vars = [max(float(sq) - float(tt) / bn, 0.0) / (bn - 1) for bn, sq, tt, *_ in acc.batches if bn > 1]
    var_ci = _batch_ci(variance, batch_vars)
    spe = acc.seconds / n
    spe_ci = _batch_ci(spe, [sec / bn for bn, *_, sec in acc.batches])
    metrics = {
        "variance": var_ci,
        "variance_per_element": Metric(variance / dim, var_ci.ci_low / dim, var_ci.ci_high / dim),
        "seconds_per_estimate": spe_ci,
        "work_normalized_variance": Metric(
            variance * spe, max(var_ci.ci_low, 0.0) * spe_ci.ci_low, var_ci.ci_high * spe_ci.ci_high
        ),
    }
    mnorm = math.sqrt(float(mean @ mean))
    mean_half = Z95 * math.sqrt(variance / n)
    v_lo, v_hi = max(var_ci.ci_low, 0.0), var_ci.ci_high
    metrics["snr"] = Metric(
        mnorm / math.sqrt(variance) if variance > 0 else math.inf,
        max(mnorm - mean_half, 0.0) / math.sqrt(v_hi) if v_hi > 0 else math.nan,
        (mnorm + mean_half) / math.sqrt(v_lo) if v_lo > 0 else math.inf,
    )
    if acc.reference is not None:
        r = acc.reference
        rnorm = math.sqrt(float(r @ r))
        diff = mean - r
        bias = math.sqrt(float(diff @ diff))
        floor = math.sqrt(variance / n + reference_variance)
        bias_ci = Metric(bias, max(bias - Z95 * floor, 0.0), bias + Z95 * floor)
        mse = _mean_ci(float(acc.q_sum), float(acc.q_sq), n)
        metrics.update(
            bias_norm=bias_ci,
            relative_bias=Metric(*(v / rnorm for v in (bias_ci.value, bias_ci.ci_low, bias_ci.ci_high)))
            if rnorm > 0 else Metric(math.nan),
            bias_noise_floor=Metric(floor),
            # E‖g − r‖² = mse + V_ref: remove the reference's own noise.
            mse=Metric(mse.value - reference_variance, mse.ci_low - reference_variance, mse.ci_high - reference_variance),
            cosine=_mean_ci(float(acc.cos_sum), float(acc.cos_sq), n),
            reference_norm=Metric(rnorm),
            reference_stderr=Metric(math.sqrt(reference_variance)),
        )
    # Finite estimates can still overflow when squared or differenced: such a metric is a failed
    # measurement, never an ok row holding inf. (snr is legitimately inf when the variance is 0.)
    overflowed = [k for k in ("variance", "bias_norm", "mse") if k in metrics and not math.isfinite(metrics[k].value)]
    if overflowed:
        return GroupSummary(n, dim, {}, None, "failed", f"{overflowed[0]} is not finite (the values overflow "
                            "the float range); nothing was averaged")
    return GroupSummary(n, dim, metrics, mean)
