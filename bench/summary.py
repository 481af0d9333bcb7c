"""The tables ``gradbench run`` prints when a run ends, made from the rows it stored.

Built from the stored rows (never from live objects), so every printed number is the
stored value in :func:`~gradbench.numbers.format_number`'s digits.

- A fixed task: one row per estimator and parameter group, each metric ``value ±h``.
- A training task: the training curves at the last logged step (one row per estimator)
  and the gradient measured at the last measured step (per estimator and group).
"""

from __future__ import annotations

from typing import Any

from .output import Column, Mark, Number, Table

FIXED_METRICS = {  # metric -> column heading
    "variance": "variance",
    "bias_norm": "bias ‖E ĝ − g‖",
    "mse": "mse",
    "cosine": "cosine",
    "snr": "snr",
    "seconds_per_estimate": "µs / estimate",
    "work_normalized_variance": "variance × s",
}
TRAINED_METRICS = {
    "variance_per_element": "variance / element",
    "variance": "variance",
    "bias_norm": "bias ‖E ĝ − g‖",
    "relative_bias": "relative bias",
    "cosine": "cosine",
}
SCALE = {"seconds_per_estimate": 1e6}  # shown in µs
CURVE_DIGITS = 4  # a training curve's differences matter at 0.1 nat on a −ELBO of 100 or so


def _is_timing(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1].endswith("seconds")


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows by (estimator label, parameter group), in the order measured."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["estimator_label"], r["param_group"]), []).append(r)
    return out


def _number(row: dict[str, Any] | None, metric: str, digits: int = 3) -> Number | None:
    if row is None:
        return None
    return Number(row["value"], row["ci_low"], row["ci_high"], SCALE.get(metric, 1.0), digits)


def gradient_table(rows: list[dict[str, Any]], metrics: dict[str, str], title: str) -> tuple[Table, list[str]]:
    """One row per (estimator, group): ``metrics``, then machine-only status and message; plus failure lines."""
    table = Table("results", title, [Column("estimator"), Column("group"),
                                     *[Column(m, h, numeric=True) for m, h in metrics.items()],
                                     *[Column(c, machine_only=True) for c in ("step", "status", "message", "task",
                                                                              "run_id")]],
                  keys=2)
    failures = []
    for (label, group), measured in _groups(rows).items():
        by_metric = {r["metric"]: r for r in measured}
        status, message, step = measured[0]["status"], measured[0]["message"], measured[0]["step"]
        if status != "ok":
            cells = [Mark(status, "red")] + [None] * (len(metrics) - 1)
            failures.append(f"{status}: {label} · {group}: {message}")
        else:
            cells = [_number(by_metric.get(m), m) for m in metrics]
        table.add(label, group, *cells, step, status, message, measured[0]["task"], measured[0]["run_id"])
    return table, failures


def fixed_tables(rows: list[dict[str, Any]]) -> tuple[list[Table], list[str]]:
    measured = [r for r in rows if r["param_group"] != ""]
    if not measured:
        return [], []
    table, failures = gradient_table(measured, FIXED_METRICS,
                                     f"{measured[0]['task']}: gradient estimates, 95% intervals")
    return [table], failures


def training_tables(rows: list[dict[str, Any]]) -> tuple[list[Table], list[str]]:
    """The curves at each estimator's last logged step; the gradient at its last measured step."""
    if not rows:
        return [], []
    task = rows[0]["task"]
    tables, failures = [], []
    curves = [r for r in rows if r["param_group"] == "" and r["metric"] not in ("failed", "skipped")]
    last = {}
    for r in curves:
        last[r["estimator_label"]] = max(last.get(r["estimator_label"], r["step"]), r["step"])
    final = [r for r in curves if r["step"] == last[r["estimator_label"]] and not _is_timing(r["metric"])]
    if final:
        names = list(dict.fromkeys(r["metric"] for r in final))
        steps = sorted(set(last.values()))
        table = Table("curves", f"{task}: training curves at step {', '.join(map(str, steps))}",
                      [Column("estimator"), Column("step", numeric=True),
                       *[Column(n, numeric=True) for n in names]])
        for label, step in last.items():
            by_metric = {r["metric"]: r for r in final if r["estimator_label"] == label}
            table.add(label, step, *[_number(by_metric.get(n), n, CURVE_DIGITS) for n in names])
        tables.append(table)
    gradient = [r for r in rows if r["param_group"] != ""]
    latest = {}
    for r in gradient:
        key = (r["estimator_label"], r["param_group"])
        latest[key] = max(latest.get(key, r["step"]), r["step"])
    at_last = [r for r in gradient if r["step"] == latest[(r["estimator_label"], r["param_group"])]]
    if at_last:
        steps = sorted({r["step"] for r in at_last})
        table, failures = gradient_table(at_last, TRAINED_METRICS, f"{task}: gradient at step "
                                         f"{', '.join(map(str, steps))}, 95% intervals")
        tables.append(table)
    crashed = [r for r in rows if r["metric"] == "failed" and r["param_group"] == ""]
    failures += [f"failed: {r['estimator_label']}: {r['message']}" for r in crashed]
    return tables, failures


def run_tables(result) -> tuple[list[Table], list[str]]:
    """The tables for a finished run (a :class:`gradbench.run.RunResult`) and one line per failure."""
    return fixed_tables(result.rows) if result.kind == "fixed" else training_tables(result.rows)
