"""GenGS bias and variance against truncation level and temperature, from ``gradbench run`` results.

    python -m gradbench.reports.counts_table RESULTS [--task poisson]

Reads every run of a count task under RESULTS and prints Markdown: for each parameter
setting (λ, ...), one table per metric with the truncation level (and the mass it
drops) down the rows and τ across the columns, then every other estimator of the same
runs for comparison. Relative bias is ‖E ĝ − g‖/‖g‖; a bias whose 95% interval reaches
0 is shown as "< upper bound" (not resolved from noise at this number of estimates).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import pandas as pd

from gradbench.store import read_results

METRICS = ("relative_bias", "variance", "truncation_level", "dropped_mass", "view_truncation_level",
           "view_dropped_mass")


def wide(rows: pd.DataFrame, task: str) -> pd.DataFrame:
    """One row per (run, estimator, group) of ``task``: metric values, intervals and parsed params."""
    rows = rows[(rows["task"] == task) & (rows["step"] == 0) & (rows["status"] == "ok")]
    if rows.empty:
        raise SystemExit(f"error: no ok results of task {task!r} in these results")
    keys = ["run_id", "task_params", "estimator", "estimator_label", "estimator_params", "param_group"]
    rows = rows[rows["metric"].isin(METRICS)]
    table = rows.pivot_table(index=keys, columns="metric", values=["value", "ci_low", "ci_high"], aggfunc="first")
    table.columns = [m if stat == "value" else f"{m}:{stat}" for stat, m in table.columns]
    table = table.reset_index()
    table["setting"] = table["task_params"].map(_setting)
    params = table["estimator_params"].map(json.loads)
    table["tau"] = params.map(lambda p: p.get("tau", math.nan))
    table["hard"] = params.map(lambda p: p.get("hard", False))
    table["tail"] = params.map(lambda p: p.get("tail", ""))
    return table


def _setting(task_params: str) -> str:
    """The learned parameters and target of a count task, e.g. 'rate=[5.0], target=[5.0]'."""
    p = json.loads(task_params)
    shown = {k: p[k] for k in ("rate", "probs", "total_count", "target", "objective") if k in p}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def bias_cell(row) -> str:
    low, high = row["relative_bias:ci_low"], row["relative_bias:ci_high"]
    return f"< {high:.2g}" if low <= 0 else f"{row['relative_bias']:.3g} [{low:.2g}, {high:.2g}]"


def level_label(row) -> str:
    return f"{int(row['truncation_level'])} ({row['dropped_mass']:.1e})"


def gengs_tables(table: pd.DataFrame) -> str:
    out = []
    for setting, group in table.groupby("setting", sort=False):
        in_grid = (group["estimator"] == "gengs") & ~group["hard"] & (group["tail"] == "last-bin")
        gengs = group[in_grid].drop_duplicates(["truncation_level", "tau"])  # equal levels give equal estimates
        out.append(f"### {setting}\n")
        if not gengs.empty:
            gengs = gengs.assign(level=gengs.apply(level_label, axis=1), bias=gengs.apply(bias_cell, axis=1))
            order = gengs.sort_values("truncation_level")["level"].unique()
            taus = sorted(gengs["tau"].unique(), reverse=True)
            for title, column in (("relative bias", "bias"), ("variance", "variance")):
                grid = gengs.pivot(index="level", columns="tau", values=column).reindex(index=order, columns=taus)
                grid = grid.map(lambda v: "–" if pd.isna(v) else v if isinstance(v, str) else f"{v:.3g}")
                grid.columns = [f"τ = {t:g}" for t in taus]
                out.append(f"GenGS (soft, last-bin): {title}; rows: truncation level n (dropped mass P(z ≥ n))\n")
                out.append(markdown(grid.rename_axis("n (dropped)").reset_index()) + "\n")
        others = group[~in_grid]
        if not others.empty:
            level = others.get("truncation_level", pd.Series(math.nan, index=others.index)).fillna(
                others.get("view_truncation_level", pd.Series(math.nan, index=others.index)))
            dropped = others.get("dropped_mass", pd.Series(math.nan, index=others.index)).fillna(
                others.get("view_dropped_mass", pd.Series(math.nan, index=others.index)))
            listing = pd.DataFrame({
                "estimator": others["estimator_label"],
                "n": level.map(lambda v: "–" if math.isnan(v) else str(int(v))),
                "dropped": dropped.map(lambda v: "–" if math.isnan(v) else f"{v:.1e}"),
                "relative bias": others.apply(bias_cell, axis=1),
                "variance": others["variance"].map(lambda v: f"{v:.3g}"),
            })
            out.append("Other estimators (categorical ones on the task's truncated view)\n")
            out.append(markdown(listing) + "\n")
    return "\n".join(out)


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (no extra dependency)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results folder (or run folder, or Parquet file)")
    parser.add_argument("--task", default="poisson", help="count task to tabulate (default: poisson)")
    args = parser.parse_args(argv)
    print(gengs_tables(wide(read_results(args.results), args.task)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
