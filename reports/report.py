"""``gradbench report RESULTS --out DIR``: every figure the results allow, summary tables, one HTML page.

Layout of DIR::

    index.html                      self-contained page (figures embedded)
    figures/<name>.png, .svg        one file pair per figure
    tables/summary.csv, .md, .tex   mean ± std over seeds (tidy CSV; wide Markdown and LaTeX)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from gradbench import __version__
from gradbench.errors import UserError
from gradbench.store import atomic_write_bytes

from . import figures as F
from . import html, tables
from .frame import prepare

CAPTIONS = {
    "variance": "Trace of the covariance of the gradient estimates per estimator on each fixed task (log scale). "
                "Bars: 95% intervals (batch means over 20 batches; several runs of one configuration are pooled).",
    "bias_variance": "Each estimator's bias ‖E ĝ − g‖ against its variance (log–log) with 95% intervals. Grey ticks: "
                     "the bias noise floor √(V/S + V_ref); a bias near or below its tick is not resolved.",
    "work_normalized_variance": "Variance times wall-clock seconds per estimate: lower is better per unit of "
                                "compute. Timing depends on the machine and its load.",
    "steps": "Gradient variance per element (and bias, when measured against a reference) at each measured "
             "training step, per parameter group. Bands: 95% t intervals over seeds (one seed: the run's own "
             "interval).",
    "curves": "Training curves as logged by training tasks, mean over seeds with 95% t bands over seeds.",
}


@dataclass
class Report:
    out: Path
    figures: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def build_figures(df: pd.DataFrame) -> list[tuple[str, str, str, object]]:
    """(name, heading, caption, Figure) for every figure the rows allow."""
    by_name = F.palette(df["estimator"])  # fixed-task overviews: one colour per estimator family
    by_label = F.palette(df.loc[df["training"], "estimator_label"])  # training lines: one per configuration
    made = [
        ("variance", "Variance per estimator", F.variance_figure(df, colours=by_name)),
        ("bias_variance", "Bias against variance", F.bias_variance_figure(df, by_name)),
        ("work_normalized_variance", "Work-normalised variance", F.work_normalized_figure(df, by_name)),
    ]
    for key in F.sweep_parameters(df):
        made.append((f"sweep_{key}", f"Sweep over {key}", F.sweep_figure(df, key)))
    made += [("steps", "Variance and bias over training", F.steps_figure(df, by_label)),
             ("curves", "Training curves", F.curves_figure(df, by_label))]
    return [(name, heading, CAPTIONS.get(name, f"Variance (top) and bias (bottom) against the estimator parameter "
                                              f"{name[6:]}, other parameters fixed; bands are 95% intervals."), fig)
            for name, heading, fig in made if fig is not None]


def runs_overview(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: when, task, estimators, seed, estimates, device, dtype."""
    g = df.groupby("run_id", sort=True)
    return pd.DataFrame({
        "run": g["run_id"].first(),
        "created (UTC)": g["created_at"].first().map(lambda t: f"{t:%Y-%m-%d %H:%M}"),
        "task": g["task_label"].first(),
        "estimators": g["estimator_label"].agg(lambda s: ", ".join(dict.fromkeys(s))),
        "seed": g["seed"].first(),
        "estimates": g["n_estimates"].max(),
        "device": g["device"].first(),
        "dtype": g["dtype"].first(),
    }).reset_index(drop=True)


def write_report(results: Path, out: Path) -> Report:
    from gradbench.store import read_results

    raw = read_results(results)
    df = prepare(raw)
    if df.empty:
        raise UserError(f"nothing to report in {results}: every row is a failed measurement")
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "tables").mkdir(exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the report folder {out}: {exc.strerror}; choose another --out") from None
    report = Report(out)
    embedded = []
    for name, heading, caption, fig in build_figures(df):
        for fmt in ("png", "svg"):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=120, metadata=_METADATA[fmt])
            path = out / "figures" / f"{name}.{fmt}"
            atomic_write_bytes(path, buf.getvalue())
            report.files.append(path)
            if fmt == "png":
                embedded.append((name, heading, caption, buf.getvalue()))
        report.figures.append(name)
    summary = tables.summary_table(df)
    for suffix, text in (("csv", summary.to_csv(index=False)), ("md", tables.to_markdown(summary)),
                         ("tex", tables.to_latex(summary))):
        path = out / "tables" / f"summary.{suffix}"
        atomic_write_bytes(path, text.encode())
        report.files.append(path)
    runs = df["run_id"].nunique()
    meta = (f"{results} · {runs} run{'s' if runs != 1 else ''}, {df['task_label'].nunique()} task(s), "
            f"{df['estimator_label'].nunique()} estimator configuration(s), seeds "
            f"{', '.join(map(str, sorted(df['seed'].unique())))} · gradbench {__version__} · "
            f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    page = html.page("gradbench report", meta, runs_overview(df), embedded, tables.wide_tables(summary))
    index = out / "index.html"
    atomic_write_bytes(index, page.encode())
    report.files.append(index)
    return report


# Fixed metadata: the same results give the same image files.
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}
