"""Compare two sets of results metric by metric: ``gradbench compare BASELINE CURRENT``.

Rows are matched on (task, task parameters, estimator, estimator parameters,
parameter group, step, metric); seeds are not part of the key, so several seeds of a
key are pooled (see :func:`gradbench.reports.frame.pool`). A key is compared only
when both sides measured it with the same task and estimator versions, device and
dtype; other keys are reported as skipped.

A **regression** needs both a factor and significance:
  - the metric got worse by more than ``max_ratio`` (current/baseline for a
    lower-is-better metric such as variance; baseline/current for accuracy), and
  - a one-sided test says "worse" at family-wise level ``alpha``: Holm's step-down
    correction over every key tested in the comparison, so ``alpha`` bounds the
    chance that an unchanged estimator raises any alarm at all.

The tests:
  variance, mse (and timing): Welch t test on log(current/baseline), each side's
      standard error taken from its stored 95% interval (delta method: se/value);
      degrees of freedom from the batches (variance: 19) by Welch–Satterthwaite.
  bias_norm, relative_bias: difference of the norms over √(floor_c² + floor_b²).
      Under "no change", |‖β+e_c‖ − ‖β+e_b‖| ≤ ‖e_c − e_b‖, a Gaussian vector whose
      trace covariance is that sum, and by Székely–Bakirov P(‖e‖ > z·√tr) ≤ P(|N(0,1)| > z):
      the p-value 2·(1 − Φ(z)) is valid whatever the covariance (conservative).
  numbers that depend on the seed (training curves and gradients of training tasks,
      where each seed trains other parameters; stateful estimators, whose state is
      adapted from the seed's noise): Welch t test on the spread over seeds, so they
      need ≥ 2 seeds a side, or, for a stateful estimator on a fixed task, the same
      seeds on both sides (then the state comes from the same noise and the intervals
      apply); otherwise they are shown as "untested".
Rounding floor: variance and mse are streamed as Σ‖g‖² − ‖Σg‖²/S (so memory stays flat
in S), which cancels down to about ε·‖E g‖² (ε the dtype's machine epsilon). An
estimator that is exact up to rounding (IndeCateR on one Bernoulli) therefore shows a
variance of pure rounding noise; where both sides are below ROUNDING_FLOOR·ε·‖reference‖²
the key is reported "at rounding floor" and never tested.
Timing metrics (seconds_per_estimate, work_normalized_variance) depend on the machine
and its load, which no within-run interval captures: they are left out unless
``timing_ratio`` is given, and then need that (generous) factor as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from gradbench.errors import UserError

from .frame import CURVE_GROUP, NORM_METRICS, TIMING_METRICS, pool, t_quantile, task_labels, training_tasks

KEY = ["task", "task_params", "estimator", "estimator_params", "param_group", "step", "metric"]
CONTEXT = {"task_version": "task version", "estimator_version": "estimator version", "device": "device",
           "dtype": "dtype"}
DEFAULT_METRICS = ("variance", "bias_norm", "mse")
LOWER_IS_BETTER = {"variance", "variance_per_element", "bias_norm", "relative_bias", "mse", "bias_noise_floor",
                   *TIMING_METRICS}
HIGHER_IS_BETTER = {"cosine", "snr"}
LOG_SCALE = {"variance", "variance_per_element", "mse", *TIMING_METRICS}
_CURVE_LOWER = ("neg_elbo", "loss", "nll", "error", "perplexity", "bpd")

REGRESSION, NOW_FAILING = "regression", "now failing"
ROUNDING = "at rounding floor"
ROUNDING_FLOOR = 64  # multiples of ε·‖reference‖²; measured rounding noise is 1–3 ε·‖reference‖²
CANCELLING = ("variance", "mse")  # metrics streamed as a difference of sums of squares


def direction(metric: str) -> int:
    """+1 when lower is better, -1 when higher is better, 0 when unknown (never a regression)."""
    if metric in LOWER_IS_BETTER:
        return 1
    if metric in HIGHER_IS_BETTER:
        return -1
    leaf = metric.rsplit("/", 1)[-1]
    if "accuracy" in leaf:
        return -1
    return 1 if any(word in leaf for word in _CURVE_LOWER) else 0


@dataclass
class Comparison:
    """rows: one per compared key (verdict and numbers); skipped: keys not compared, with the reason."""

    rows: pd.DataFrame
    skipped: pd.DataFrame
    alpha: float
    max_ratio: float

    @property
    def regressions(self) -> pd.DataFrame:
        return self.rows[self.rows["verdict"].isin([REGRESSION, NOW_FAILING])]

    @property
    def exit_code(self) -> int:
        return 1 if len(self.regressions) else 0


def select(df: pd.DataFrame, metrics: tuple[str, ...] | None, timing: bool) -> pd.DataFrame:
    """Rows to compare: the chosen gradient metrics, curve metrics of known direction, failures."""
    if metrics:
        chosen = df["metric"].isin(metrics)
    else:
        curve = (df["param_group"] == CURVE_GROUP) & df["metric"].map(direction).ne(0)
        chosen = df["metric"].isin(DEFAULT_METRICS) | curve
    if timing:
        chosen |= df["metric"].isin(TIMING_METRICS)
    elif metrics:
        chosen &= ~df["metric"].isin(TIMING_METRICS)
    return df[chosen | (df["status"] != "ok")]


def compare(baseline: pd.DataFrame, current: pd.DataFrame, *, metrics: tuple[str, ...] | None = None,
            max_ratio: float = 1.25, alpha: float = 0.01, timing_ratio: float | None = None) -> Comparison:
    """Compare two results tables (rows as read by ``gradbench.store.read_results``)."""
    for flag, ratio in (("--max-ratio", max_ratio), ("--timing-ratio", timing_ratio)):
        if ratio is not None and not 1 <= ratio < math.inf:  # also refuses nan, which every comparison passes
            raise UserError(f"{flag} must be a finite number ≥ 1, got {ratio}")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {alpha}")
    both = pd.concat([baseline.assign(_side="baseline"), current.assign(_side="current")], ignore_index=True)
    both["training"] = training_tasks(both)
    both["seed_dependent"] = both["training"] | (both["warmup"] > 0)
    floors = _rounding_floors(both)
    both = select(both, metrics, timing_ratio is not None)
    both = _failures_as_rows(both)
    both["task_label"] = task_labels(both)
    sides = {side: _summarise(g) for side, g in both.groupby("_side")}
    base = sides.get("baseline", _summarise(both.iloc[:0]))
    cur = sides.get("current", _summarise(both.iloc[:0]))
    merged = base.merge(cur, on=KEY, how="outer", suffixes=("_b", "_c"), indicator=True)
    for col in ("task_label", "estimator_label", "training", "seed_dependent"):
        merged[col] = merged[f"{col}_b"].where(merged[f"{col}_b"].notna(), merged[f"{col}_c"])
    merged["reason"] = _skip_reasons(merged)
    skipped = merged[(merged["reason"] != "") & (merged["metric"] != "status")]
    rows = merged[merged["reason"] == ""].copy()
    for side in ("b", "c"):
        side_floors = floors.get("baseline" if side == "b" else "current", pd.Series(dtype=float))
        key = pd.MultiIndex.from_frame(rows[_MEASUREMENT].astype(str))
        rows[f"floor_{side}"] = side_floors.reindex(key).to_numpy()
    if rows.empty:
        detail = skipped["reason"].value_counts().head(3)
        raise UserError("nothing to compare: no key is in both results with the same versions, device and dtype ("
                        + "; ".join(f"{n} {r}" for r, n in detail.items()) + "); regenerate the baseline")
    rows = _test(rows, max_ratio, alpha, timing_ratio)
    show = ["task_label", "estimator_label", "param_group", "step", "metric"]
    return Comparison(rows.sort_values(show).reset_index(drop=True),
                      skipped[KEY + ["task_label", "estimator_label", "reason"]].reset_index(drop=True),
                      alpha, max_ratio)


_MEASUREMENT = [k for k in KEY if k != "metric"]


def _rounding_floors(df: pd.DataFrame) -> dict[str, pd.Series]:
    """Per side and measurement key: ROUNDING_FLOOR·ε·‖reference‖², the largest over its rows."""
    ref = df[df["metric"] == "reference_norm"]
    eps = ref["dtype"].map(lambda d: np.finfo(d).eps if d in ("float16", "bfloat16", "float32", "float64")
                           else np.nan).astype(float)
    floor = (ROUNDING_FLOOR * eps * ref["value"].astype(float) ** 2).rename("floor")
    keyed = pd.concat([ref[["_side", *_MEASUREMENT]].astype(str), floor], axis=1)
    return {side: g.groupby(_MEASUREMENT)["floor"].max() for side, g in keyed.groupby("_side")}


def _failures_as_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Each measurement (one run's rows of one key but the metric) becomes one more row, metric
    "status", value 1 when it failed and 0 when it succeeded, so failures are matched like metrics."""
    measurement = ["_side", "run_id", *[k for k in KEY if k != "metric"]]
    failed = (df["status"] != "ok").astype(float).groupby([df[c] for c in measurement], sort=False,
                                                          dropna=False).transform("max")
    status = df.assign(metric="status", value=failed, ci_low=np.nan, ci_high=np.nan, status="ok")
    ok = df[(df["status"] == "ok") & (df["metric"] != "failed")]
    return pd.concat([ok, status.drop_duplicates(measurement)], ignore_index=True)


def _summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per key: pooled value, se, dof, the context (versions, device, dtype) and all raw values (for identity)."""
    if df.empty:
        cols = KEY + ["value", "se", "dof", "n", "method", "seed_dependent", "training", "task_label",
                      "estimator_label", "context", "values", "seeds"]
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    pooled = pool(df, KEY)
    # One string per row for its context; a key whose rows disagree shows all of them.
    df = df.assign(_context=df[list(CONTEXT)].astype(str).agg(" | ".join, axis=1)).sort_values(KEY + ["value"])
    grouped = df.groupby(KEY, sort=False, dropna=False)
    extra = grouped.agg(task_label=("task_label", "first"), estimator_label=("estimator_label", "first"),
                        context=("_context", lambda s: " / ".join(sorted(set(s)))), values=("value", tuple),
                        seeds=("seed", lambda s: tuple(sorted(set(s)))), training=("training", "any")).reset_index()
    return pooled.merge(extra, on=KEY)


def _skip_reasons(merged: pd.DataFrame) -> pd.Series:
    reasons = []
    for side, ctx_b, ctx_c in zip(merged["_merge"], merged["context_b"], merged["context_c"]):
        if side == "left_only":
            reasons.append("only in baseline")
        elif side == "right_only":
            reasons.append("only in current")
        elif ctx_b != ctx_c:
            parts_b, parts_c = ctx_b.split(" | "), ctx_c.split(" | ")
            if len(parts_b) == len(parts_c) == len(CONTEXT):
                what = [f"{name} {b} → {c}" for name, b, c in zip(CONTEXT.values(), parts_b, parts_c) if b != c]
                reasons.append("different " + ", ".join(what))
            else:  # one side mixes several versions, devices or dtypes
                reasons.append(f"different {' / '.join(CONTEXT.values())}: {ctx_b} → {ctx_c}")
        else:
            reasons.append("")
    return pd.Series(reasons, index=merged.index, dtype=object)


def _test(rows: pd.DataFrame, max_ratio: float, alpha: float, timing_ratio: float | None) -> pd.DataFrame:
    metric = rows["metric"].to_numpy()
    sign = np.array([direction(m) if m != "status" else 1 for m in metric], dtype=float)
    b, c = rows["value_b"].to_numpy(float), rows["value_c"].to_numpy(float)
    se_b, se_c = rows["se_b"].to_numpy(float), rows["se_c"].to_numpy(float)
    dof_b, dof_c = rows["dof_b"].to_numpy(float), rows["dof_c"].to_numpy(float)
    # A seed-dependent number is compared through its spread over seeds, or, at a fixed
    # task, through the intervals when both sides adapted the state from the same seeds.
    spread = (rows["method_b"].to_numpy() == "seeds") & (rows["method_c"].to_numpy() == "seeds")
    paired = ~rows["training"].to_numpy(bool) & (rows["seeds_b"] == rows["seeds_c"]).to_numpy()
    seeded = rows["seed_dependent"].to_numpy(bool)
    testable = np.isfinite(se_b) & np.isfinite(se_c) & (sign != 0) & (~seeded | spread | paired)
    identical = (rows["values_b"] == rows["values_c"]).to_numpy()
    rounding = np.isin(metric, CANCELLING) & (b <= rows["floor_b"].to_numpy(float)) & (
        c <= rows["floor_c"].to_numpy(float))
    log_scale = np.isin(metric, list(LOG_SCALE)) & (b > 0) & (c > 0)
    norm = np.isin(metric, list(NORM_METRICS))
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(log_scale, np.log(c) - np.log(b), c - b)
        sb, sc = np.where(log_scale, se_b / b, se_b), np.where(log_scale, se_c / c, se_c)
        se = np.sqrt(sb**2 + sc**2)
        dof = (sb**2 + sc**2) ** 2 / (sb**4 / dof_b + sc**4 / dof_c)
        z = sign * d / se
        ratio = np.where((b > 0) & (c > 0), (c / b) ** sign, np.nan)
    dof = np.where(np.isfinite(dof) & ~norm, dof, np.inf)
    p_worse = _p_value(z, dof, norm)
    p_better = _p_value(-z, dof, norm)
    tested = testable & ~identical & ~rounding & (se > 0)
    adj_worse, adj_better = _holm(p_worse, tested), _holm(p_better, tested)
    factor = np.where(np.isin(metric, list(TIMING_METRICS)), timing_ratio or np.inf, max_ratio)
    status_change = (metric == "status") & ~identical
    big_worse = ratio > factor
    big_better = (1 / ratio) > factor
    verdict = np.select(
        [identical, status_change & (c > b), status_change, rounding, ~testable, big_worse & (adj_worse < alpha),
         big_better & (adj_better < alpha), adj_worse < alpha, adj_better < alpha],
        ["identical", NOW_FAILING, "now ok", ROUNDING, "untested", REGRESSION, "improvement", "worse", "better"], "same")
    rows = rows.assign(ratio=ratio, p=np.where(z >= 0, adj_worse, adj_better), verdict=verdict,
                       half_b=t_quantile(dof_b) * se_b, half_c=t_quantile(dof_c) * se_c)
    rows = rows[(rows["metric"] != "status") | ~rows["verdict"].isin(["identical", "same", "untested"])]
    return rows[["task_label", "estimator_label", *KEY, "value_b", "half_b", "n_b", "value_c", "half_c", "n_c",
                 "ratio", "p", "verdict"]].rename(columns={"value_b": "baseline", "value_c": "current",
                                                           "n_b": "baseline_rows", "n_c": "current_rows"})


def _p_value(z: np.ndarray, dof: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """One-sided p-values; for norms the Székely–Bakirov bound 2·(1 − Φ(z)), capped at 1."""
    with np.errstate(invalid="ignore"):
        t = sps.t.sf(z, np.where(np.isfinite(dof), dof, 1.0))
        p = np.where(np.isfinite(dof), t, sps.norm.sf(z))
        p = np.where(norm, np.minimum(1.0, 2 * sps.norm.sf(z)), p)
    return np.where(np.isfinite(z), p, 1.0)


def _holm(p: np.ndarray, tested: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values over the tested entries (1 elsewhere)."""
    out = np.ones_like(p)
    idx = np.flatnonzero(tested)
    if not len(idx):
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out
