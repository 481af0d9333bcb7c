"""Results rows as reports and comparisons see them: labels, standard errors, pooling.

Rows come from :func:`gradbench.store.read_results` (schema in ``gradbench.store``).
Two kinds of rows: gradient measurements (``param_group`` names a parameter group)
and training-curve values (``param_group == ""``, metrics like "test/neg_elbo").

Standard errors are recovered from the stored 95% intervals, which
``gradbench.stats`` builds in three ways:

  batch means (variance, variance_per_element, seconds_per_estimate): half-width
      t(m−1)·se with m = min(20, S // 2) batches (the runner's default);
  i.i.d. means (mse, cosine): half-width t(S−1)·se;
  norms (bias_norm, relative_bias): upper end value + z·floor with floor the noise
      floor √(V/S + V_ref), so se = floor (ci_low is clipped at 0).

Other intervals (snr, work_normalized_variance) are not symmetric; their se is the
width over 2z, an approximation only used when such a metric is asked for.

Pooling several rows of one key (seeds, repeated runs): on a fixed task every run
estimates the same number, so the rows are averaged and their standard errors
combined (se = √Σse²/k, Welch–Satterthwaite degrees of freedom). Some numbers
depend on the seed itself: on a training task each seed trains other parameters,
and a stateful estimator (``warmup > 0``) is measured at a state adapted from the
seed's noise. Their rows are a sample of seeds: mean and the standard error of the
seed spread (k ≥ 2).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from gradbench.errors import UserError
from gradbench.spec import parse_spec

CURVE_GROUP = ""  # param_group of training-curve rows (gradbench.training.TRAINING_METRIC_GROUP)
Z95 = 1.959963984540054
BATCHES = 20  # gradbench.engine.MeasureConfig.batches

BATCH_METRICS = ("variance", "variance_per_element", "seconds_per_estimate")
IID_METRICS = ("mse", "cosine")
NORM_METRICS = ("bias_norm", "relative_bias")
TIMING_METRICS = ("seconds_per_estimate", "work_normalized_variance")


def t_quantile(dof, level: float = 0.975):
    """t quantile, the normal one for infinite degrees of freedom; vectorised."""
    dof = np.asarray(dof, dtype=float)
    with np.errstate(invalid="ignore"):
        q = sps.t.ppf(level, np.where(np.isfinite(dof), dof, 1.0))
    return np.where(np.isfinite(dof), q, sps.norm.ppf(level))


def interval_stderr(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Standard error and degrees of freedom behind each row's stored 95% interval (NaN: none)."""
    metric = df["metric"].to_numpy()
    n = df["n_estimates"].to_numpy(dtype=float)
    value, low, high = (df[c].to_numpy(dtype=float) for c in ("value", "ci_low", "ci_high"))
    dof = np.full(len(df), np.inf)
    is_batch, is_iid, is_norm = (np.isin(metric, m) for m in (BATCH_METRICS, IID_METRICS, NORM_METRICS))
    dof[is_batch] = np.minimum(BATCHES, n[is_batch] // 2) - 1
    dof[is_iid] = n[is_iid] - 1
    dof[dof < 1] = np.nan
    half = (high - low) / 2
    half[is_norm] = (high - value)[is_norm]
    with np.errstate(invalid="ignore", divide="ignore"):
        se = half / t_quantile(dof)
    return se, np.where(np.isfinite(se), dof, np.nan)


def seed_dependent(df: pd.DataFrame) -> pd.Series:
    """Per row: whether the measured quantity itself depends on the seed (training, adapted state)."""
    return training_tasks(df) | (df["warmup"] > 0)


def training_tasks(df: pd.DataFrame) -> pd.Series:
    """Per row: whether its task trains (has curve rows or steps other than 0)."""
    key = df["task"] + "\x00" + df["task_params"]
    trains = (df["param_group"] == CURVE_GROUP) | (df["step"] != 0)
    training_keys = set(key[trains])
    return key.isin(training_keys)


def pool(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per ``by`` group: value, se, dof, ci_low, ci_high, n (rows pooled), seed_dependent, method.

    A boolean column "seed_dependent" (see :func:`seed_dependent`) is used when present,
    so callers that dropped curve rows can still say which tasks train.

    method: "interval" (stored intervals combined), "seeds" (spread over k ≥ 2 seeds of a
    seed-dependent quantity, or of rows without intervals) or "single" (one row, no interval).
    """
    df = df.copy()
    df["_se"], df["_dof"] = interval_stderr(df)
    df["_seeded"] = df["seed_dependent"] if "seed_dependent" in df else seed_dependent(df)
    df["_se2"] = df["_se"] ** 2
    df["_se4dof"] = df["_se2"] ** 2 / df["_dof"]
    grouped = df.groupby(by, sort=False, dropna=False)
    out = grouped.agg(value=("value", "mean"), sd=("value", "std"), n=("value", "size"),
                      se2=("_se2", "sum"), se4dof=("_se4dof", "sum"), has_interval=("_se", lambda s: s.notna().all()),
                      seed_dependent=("_seeded", "any"), ci_low1=("ci_low", "first"), ci_high1=("ci_high", "first"),
                      dof1=("_dof", "first")).reset_index()
    k = out["n"].to_numpy(dtype=float)
    by_interval = out["has_interval"].to_numpy() & ~(out["seed_dependent"].to_numpy() & (k >= 2))
    by_seeds = ~by_interval & (k >= 2)
    se = np.where(by_interval, np.sqrt(out["se2"]) / k, np.where(by_seeds, out["sd"] / np.sqrt(k), np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        welch = np.where(out["se4dof"] > 0, out["se2"] ** 2 / out["se4dof"], np.inf)
    dof = np.where(by_interval, np.where(k == 1, out["dof1"], welch), np.where(by_seeds, k - 1, np.nan))
    half = t_quantile(dof) * se
    value = out["value"].to_numpy()
    single = by_interval & (k == 1)
    out["se"], out["dof"] = se, dof
    # A single row keeps its own interval (exact, and one-sided where the metric's is).
    out["ci_low"] = np.where(single, out["ci_low1"], value - half)
    out["ci_high"] = np.where(single, out["ci_high1"], value + half)
    out["method"] = np.select([by_interval, by_seeds], ["interval", "seeds"], "single")
    return out.drop(columns=["se2", "se4dof", "has_interval", "ci_low1", "ci_high1", "dof1", "sd"])


def params_label(name: str, params: dict, keep: list[str]) -> str:
    """``name(k=v, ...)`` over the keys in ``keep`` (in order)."""
    shown = [f"{k}={params[k]!r}" for k in keep if k in params]
    return f"{name}({', '.join(shown)})" if shown else name


def task_labels(df: pd.DataFrame) -> pd.Series:
    """Per row: the task name, plus the parameters that tell apart its configurations in ``df``."""
    labels = {}
    for name, group in df.groupby("task", sort=False):
        configs = {p: json.loads(p) for p in group["task_params"].unique()}
        keys = sorted({k for c in configs.values() for k in c})
        varying = [k for k in keys if len({json.dumps(c.get(k)) for c in configs.values()}) > 1]
        for text, params in configs.items():
            labels[(name, text)] = params_label(name, params, varying)
    return pd.Series([labels[k] for k in zip(df["task"], df["task_params"])], index=df.index, dtype=object)


def estimator_labels(df: pd.DataFrame, drop: tuple[str, ...] = ()) -> pd.Series:
    """Per row: the estimator's stored label (its spec with the parameters that differed from their
    defaults when it ran), leaving out those in ``drop``.

    From the stored rows only: a default changed since keeps old results' labels as they were.
    """
    labels = {}
    for name, text, stored in df[["estimator", "estimator_params", "estimator_label"]].drop_duplicates().itertuples(
            index=False):
        try:
            changed = list(parse_spec(stored).kwargs)
        except UserError:  # not a spec (written by hand): keep it as it is
            labels[(name, text, stored)] = stored
            continue
        labels[(name, text, stored)] = params_label(name, json.loads(text), [k for k in changed if k not in drop])
    keys = zip(df["estimator"], df["estimator_params"], df["estimator_label"])
    return pd.Series([labels[k] for k in keys], index=df.index, dtype=object)


def param_value(df: pd.DataFrame, key: str) -> pd.Series:
    """Per row: the estimator's parameter ``key`` (NaN when it has none)."""
    cache = {text: json.loads(text).get(key, math.nan) for text in df["estimator_params"].unique()}
    return df["estimator_params"].map(cache)


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Successful rows with the columns reports use: task_label, training, seed_dependent.

    Idempotent, so every figure and table function can take raw or prepared rows.
    """
    if "task_label" in df:
        return df
    df = df[df["status"] == "ok"].copy()
    df["task_label"] = task_labels(df)
    df["training"] = training_tasks(df)
    df["seed_dependent"] = seed_dependent(df)
    return df.reset_index(drop=True)
