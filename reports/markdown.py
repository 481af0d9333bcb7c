"""Markdown tables from stored results, for READMEs and notes.

    python -m gradbench.reports.markdown RESULTS_DIR [RESULTS_DIR ...]

prints one variance table per task found in the folders (any folder
``pandas.read_parquet`` reads: a run folder or a results folder of runs).
"""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd

from gradbench.numbers import format_number

COLUMNS = {
    "variance": "variance",
    "work_normalized_variance": "variance × s",
    "seconds_per_estimate": "µs / estimate",
    "relative_bias": "relative bias",
}
_SCALE = {"seconds_per_estimate": 1e6}


def _cell(row: pd.Series, metric: str) -> str:
    scale = _SCALE.get(metric, 1.0)
    value, low, high = (row.get((k, metric), math.nan) * scale for k in ("value", "ci_low", "ci_high"))
    if math.isnan(low):
        return format_number(value)
    return f"{format_number(value)} ±{format_number(max(high - value, value - low))}"


def variance_table(frame: pd.DataFrame, baseline: str = "reinforce") -> str:
    """One Markdown table of a single task's fixed-parameter measurements, lowest variance first.

    Columns: each metric of COLUMNS with the half-width of its 95% interval, the
    variance as a multiple of ``baseline``'s, and the warm-up steps of stateful
    estimators. Failed measurements are listed with their message.
    """
    frame = frame[frame["step"] == 0]
    if frame["task"].nunique() != 1:
        raise ValueError(f"variance_table takes one task, got {sorted(frame['task'].unique())}")
    ok = frame[frame["status"] == "ok"]
    wide = ok.pivot_table(index=["estimator_label", "param_group"], columns="metric",
                          values=["value", "ci_low", "ci_high"], aggfunc="first")
    wide = wide.sort_values(("value", "variance"))
    base = wide.xs(baseline, level=0)[("value", "variance")] if baseline in wide.index.get_level_values(0) else None
    groups = wide.index.get_level_values(1).unique()
    head = ["estimator"] + (["group"] if len(groups) > 1 else []) + list(COLUMNS.values())
    head += [f"variance ÷ {baseline}", "warm-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    warmups = ok.groupby("estimator_label")["warmup"].first()
    for (label, group), row in wide.iterrows():
        ratio = row[("value", "variance")] / base[group] if base is not None and base[group] > 0 else math.nan
        cells = [f"`{label}`"] + ([group] if len(groups) > 1 else []) + [_cell(row, m) for m in COLUMNS]
        cells += [format_number(ratio), str(int(warmups[label])) if warmups[label] else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    for (label, message) in frame[frame["status"] != "ok"][["estimator_label", "message"]].drop_duplicates().values:
        lines.append(f"| `{label}` | failed: {message} |")
    return "\n".join(lines)


def task_title(frame: pd.DataFrame) -> str:
    """The task's name with all its parameters, e.g. ``toy-bernoulli(dim=10, ...)``."""
    params = json.loads(frame["task_params"].iloc[0])
    return f"{frame['task'].iloc[0]}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="results folders or run folders")
    args = parser.parse_args(argv)
    frame = pd.concat([pd.read_parquet(p) for p in args.paths], ignore_index=True)
    for _, task_frame in frame.groupby(["task", "task_params"], sort=False):
        print(f"**{task_title(task_frame)}**\n\n{variance_table(task_frame)}\n")


if __name__ == "__main__":
    main()
