"""Summary tables in the style of the GST paper: mean ± std over seeds per estimator and τ.

Fixed tasks give one value per seed of each gradient metric; training tasks give
the last logged value of each training curve (test negative ELBO, accuracy, ...)
per seed. The tidy table (:func:`summary_table`) is written as CSV; the wide one
(rows τ × estimator, a column per metric) as Markdown and LaTeX, one table per
task and parameter group.
"""

from __future__ import annotations

import math

import pandas as pd

from .frame import CURVE_GROUP, estimator_labels, param_value, prepare

FIXED_METRICS = ("variance", "bias_norm", "mse", "cosine")
SECTION = ["task_label", "param_group"]
ROW = ["tau", "estimator"]


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy: task_label, param_group, tau, estimator, metric, step, mean, std, seeds (std NaN for one seed)."""
    df = prepare(df)
    fixed = df[~df["training"] & df["metric"].isin(FIXED_METRICS) & (df["param_group"] != CURVE_GROUP)]
    curves = df[df["training"] & (df["param_group"] == CURVE_GROUP)]
    # The last value each run logged of each curve.
    last = curves[curves["step"] == curves.groupby(["run_id", "estimator_label", "metric"])["step"].transform("max")]
    rows = pd.concat([fixed, last], ignore_index=True)
    cols = SECTION + ROW + ["metric", "step", "mean", "std", "seeds"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows["tau"] = param_value(rows, "tau")
    rows["estimator"] = estimator_labels(rows, drop=("tau",))
    keys = SECTION + ROW + ["metric"]
    # Re-runs of one seed give the same numbers: average them before taking the spread over seeds.
    per_seed = rows.groupby(keys + ["seed"], dropna=False).agg(value=("value", "mean"), step=("step", "max"))
    out = per_seed.reset_index().groupby(keys, dropna=False).agg(
        step=("step", "max"), mean=("value", "mean"), std=("value", "std"), seeds=("value", "size")).reset_index()
    out = out.sort_values(SECTION + ["tau", "estimator", "metric"], ascending=[True, True, False, True, True],
                          na_position="last")
    return out[cols].reset_index(drop=True)


def cell(mean: float, std: float) -> str:
    """``mean ± std`` with 4 and 2 significant digits (``mean`` alone for one seed)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def wide_tables(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) per task and group: rows τ × estimator, columns τ, estimator, seeds, one per metric."""
    tables = []
    for (task, group), part in summary.groupby(SECTION, sort=False):
        part = part.assign(cell=[cell(m, s) for m, s in zip(part["mean"], part["std"])],
                           tau=part["tau"].map(lambda t: "–" if pd.isna(t) else f"{t:g}"))
        metrics = list(dict.fromkeys(part["metric"]))
        wide = part.pivot_table(index=ROW, columns="metric", values="cell", aggfunc="first", sort=False)
        seeds = part.groupby(ROW, sort=False)["seeds"].max()
        wide = wide.reindex(columns=metrics).fillna("–")
        wide.insert(0, "seeds", seeds.reindex(wide.index).astype(int))
        wide.columns.name = None
        title = task if group == CURVE_GROUP else f"{task} · {group}"
        tables.append((title, wide.reset_index().rename(columns={"tau": "τ"})))
    return tables


def to_markdown(summary: pd.DataFrame) -> str:
    lines = ["# Summary: mean ± std over seeds", "",
             "Fixed tasks: gradient metrics at the task's parameters. Training tasks: the last logged value "
             "of each curve. τ is the estimator's temperature (– when it has none).", ""]
    for title, table in wide_tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(map(str, table.columns)) + " |",
                  "|" + "|".join("---:" if c not in ("estimator",) else "---" for c in table.columns) + "|"]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        lines.append("")
    return "\n".join(lines)


def _tex(text) -> str:
    text = str(text)
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                 ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}"), ("$", r"\$")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("τ", r"$\tau$").replace("–", "--").replace("·", r"$\cdot$")


def to_latex(summary: pd.DataFrame) -> str:
    """One booktabs tabular per task and group (needs \\usepackage{booktabs})."""
    parts = ["% gradbench summary: mean ± std over seeds (requires \\usepackage{booktabs})"]
    for title, table in wide_tables(summary):
        header = list(map(str, table.columns))
        spec = "".join("l" if c == "estimator" else "r" for c in table.columns)
        parts += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(title)}: mean $\pm$ std over seeds}}",
                  rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(_tex(h) for h in header) + r" \\",
                  r"\midrule"]
        parts += [" & ".join(_tex(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
        parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(parts)
