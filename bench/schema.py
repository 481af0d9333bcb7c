"""The result row: its columns, their types, and how a row is built.

Every row a run stores (a fixed-task measurement, a training curve value, a skipped
or failed measurement, a sweep cell that failed before measuring) is one metric of
one estimator in one run, built here so the 28 columns are spelled once. The
store writes them with the Arrow types derived from :data:`COLUMNS`.

A row is three layers of columns: the run's (:func:`run_columns`), the estimator's
(:func:`estimator_columns`), and the metric's (:func:`metric_row`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from . import __version__

# name -> Python type of the value (store.py maps str/int/float/datetime to Arrow types).
COLUMNS: dict[str, type] = {
    "run_id": str,
    "created_at": datetime,  # UTC
    "gradbench_version": str,
    "torch_version": str,
    "device": str,
    "dtype": str,
    "seed": int,
    "task": str,
    "task_version": int,
    "task_params": str,  # JSON, sorted keys
    "estimator": str,
    "estimator_version": int,
    "estimator_params": str,  # JSON, sorted keys
    "estimator_label": str,  # as the run labelled it; reports use it as stored
    "family": str,  # the family the estimator saw ("" for rows that are not measurements)
    "engine": str,
    "warmup": int,
    "step": int,  # training step (0 for fixed tasks)
    "param_group": str,  # "" for training-curve and run-level rows
    "n_estimates": int,
    "reference": str,  # reference kind actually used ("exact", "rloo", ...) or the requested mode
    "reference_samples": int,
    "metric": str,
    "value": float,
    "ci_low": float,
    "ci_high": float,
    "status": str,  # ok, failed or skipped
    "message": str,
}


def run_columns(*, run_id: str, created_at: datetime, torch_version: str, device: str, dtype: str, seed: int,
                task: str, task_version: int, task_params: str, engine: str, reference: str) -> dict[str, Any]:
    """The columns shared by every row of one run (step 0, no reference samples until one is resolved)."""
    return {"run_id": run_id, "created_at": created_at, "gradbench_version": __version__,
            "torch_version": torch_version, "device": device, "dtype": dtype, "seed": seed, "task": task,
            "task_version": task_version, "task_params": task_params, "engine": engine, "step": 0,
            "reference": reference, "reference_samples": 0}


def estimator_columns(common: dict[str, Any], *, estimator: str, estimator_version: int, estimator_params: str,
                      estimator_label: str, family: str, warmup: int) -> dict[str, Any]:
    """``common`` plus the columns of one estimator."""
    return dict(common, estimator=estimator, estimator_version=estimator_version, estimator_params=estimator_params,
                estimator_label=estimator_label, family=family, warmup=warmup)


def base_row(common: dict[str, Any], estimator, family: str, warmup: int) -> dict[str, Any]:
    """``common`` plus the columns of a configured :class:`~gradbench.contract.Estimator`."""
    return estimator_columns(common, estimator=estimator.name, estimator_version=estimator.version,
                             estimator_params=estimator.params_json(), estimator_label=estimator.label,
                             family=family, warmup=warmup)


def metric_row(base: dict[str, Any], metric: str, value: float = math.nan, *, ci_low: float = math.nan,
               ci_high: float = math.nan, status: str = "ok", message: str = "", param_group: str = "",
               n_estimates: int = 0, step: int | None = None) -> dict[str, Any]:
    """A complete row: ``base`` (run and estimator columns) plus one metric; checks every column is there once."""
    row = dict(base, param_group=param_group, n_estimates=n_estimates, metric=metric, value=value, ci_low=ci_low,
               ci_high=ci_high, status=status, message=message)
    if step is not None:
        row["step"] = step
    if row.keys() != COLUMNS.keys():
        missing, extra = sorted(COLUMNS.keys() - row.keys()), sorted(row.keys() - COLUMNS.keys())
        raise ValueError(f"a result row must have exactly the schema's columns: missing {missing}, extra {extra}")
    return row


def measurement_rows(common: dict[str, Any], result, step: int | None = None) -> list[dict[str, Any]]:
    """Tidy rows (one per metric and parameter group) for one :class:`~gradbench.engine.Measurement`."""
    base = base_row(common, result.estimator, result.family, result.warmup)
    rows = []
    for group, summary in result.groups.items():
        head = dict(param_group=group, n_estimates=summary.n, status=summary.status, message=summary.message,
                    step=step)
        if summary.status != "ok":
            rows.append(metric_row(base, "failed", **head))
        for name, m in summary.metrics.items():
            rows.append(metric_row(base, name, m.value, ci_low=m.ci_low, ci_high=m.ci_high, **head))
        # Diagnostics describe the whole measurement: repeated on each group so any group's rows are complete.
        for name, value in result.extra.items():
            rows.append(metric_row(base, name, float(value), **head))
    return rows
