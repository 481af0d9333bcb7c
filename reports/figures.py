"""Figures of a results table, one function per figure.

Each figure has a ``*_data`` function giving exactly what it draws (one row per
point, with its 95% interval: see :func:`gradbench.reports.frame.pool` for how
seeds are pooled) and a ``*_figure`` function drawing that table; the latter
returns None when the results hold nothing to draw. Figures are plain
:class:`matplotlib.figure.Figure` objects on the Agg canvas: no pyplot, no global
state, no display needed. Seaborn sets the style and draws the lines.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager

import numpy as np
import pandas as pd

from .frame import CURVE_GROUP, estimator_labels, pool, prepare

PANEL = (4.6, 3.3)  # inches per facet
LOG_FLOOR = 1e-12  # on log axes an interval end at or below 0 is drawn here, below the axis limits
STEP_METRICS = ("variance_per_element", "bias_norm")
ANNOTATE_MAX = 6  # label the points of a bias–variance panel up to this many (more would overlap)
SWEEP_METRICS = ("variance", "bias_norm")


@contextmanager
def _style():
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        yield


def palette(labels) -> dict[str, tuple]:
    """One colour per estimator label, stable across the figures of a report."""
    import seaborn as sns

    labels = sorted(set(labels))
    colours = sns.color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))
    return dict(zip(labels, colours))


def _complete(colours: dict | None, labels) -> dict:
    """The given colours if they cover every label, else a palette of these labels."""
    return colours if colours and set(labels) <= set(colours) else palette(labels)


def _figure(n_panels: int, ncols: int = 3, panel=PANEL, nrows: int | None = None, heights: list | None = None):
    """A constrained-layout figure on the Agg canvas with a grid of panels (``heights``: one column,
    panel heights in inches)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if heights:
        ncols, nrows, size = 1, len(heights), (panel[0], sum(heights) + 0.6)
    else:
        ncols = min(ncols, n_panels) if nrows is None else ncols
        nrows = nrows or math.ceil(n_panels / ncols)
        size = (panel[0] * ncols, panel[1] * nrows)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, height_ratios=heights)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _panel_titles(keys) -> dict[tuple[str, str], str]:
    """(task, group) -> panel title: "task · group", or only "task" when it is the task's one group and that is
    the default ("logits", or "" for curves). One rule per figure, so a task's panels read alike."""
    keys = list(keys)
    groups: dict[str, set] = {}
    for task, group in keys:
        groups.setdefault(task, set()).add(group)
    return {(t, g): t if groups[t] == {g} and g in ("", "logits") else f"{t} · {g}" for t, g in keys}


# -- text that fits: titles wrapped to their axes, point labels that do not collide ------------------------------

def _units(line: str) -> list[str]:
    """A spec's words for wrapping: split at ", " outside [...] and {...}, so a parameter's list stays whole."""
    units, depth, start = [], 0, 0
    for i, ch in enumerate(line):
        depth += (ch in "[{") - (ch in "]}")
        if ch == " " and depth == 0 and line[i - 1] == ",":
            units.append(line[start:i])
            start = i + 1
    return units + [line[start:]]


def _wrap_to(text, width_px: float) -> None:
    """Break a Text artist's string so each line, as drawn, is at most ``width_px`` wide: between parameters
    where that is enough, else at any space."""
    renderer = text.figure.canvas.get_renderer()

    def fits(candidate: str) -> bool:
        text.set_text(candidate)
        return text.get_window_extent(renderer).width <= width_px

    def pack(words: list[str]) -> list[str]:
        lines, line = [], words[0]
        for word in words[1:]:
            if fits(f"{line} {word}"):
                line = f"{line} {word}"
            else:
                lines.append(line)
                line = word
        return lines + [line]

    lines = []
    for line in pack(_units(text.get_text().replace("\n", " "))):
        lines += [line] if fits(line) else pack(line.split(" "))
    text.set_text("\n".join(lines))


def _text_box(text, renderer):
    """The box of a Text's own glyphs (an Annotation's without its leader line), at its current position."""
    from matplotlib.text import Annotation, Text

    if isinstance(text, Annotation):
        text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def _place_labels(ax, labels: list, points: list[tuple[float, float]], bars: list[tuple] = ()) -> None:
    """Move point labels (annotations in offset points) so none overlaps another label, a point or an error bar,
    all inside the axes.

    Tries the right, then the left of its point, at growing vertical offsets; a moved label keeps a thin
    leader line to its point. ``bars``: per point (x low, x high, y low, y high) in data units.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    to_pt = 72 / fig.dpi
    xy = ax.transData.transform(points)
    marks = [(x - 4, y - 4, x + 4, y + 4) for x, y in xy]  # the markers, as obstacles
    (x_min, x_max), (y_min, y_max) = ax.get_xlim(), ax.get_ylim()
    for (x, y), (x_lo, x_hi, y_lo, y_hi) in zip(points, bars):  # error bars (caps included), clipped to the axes
        (a, b), (c, d) = ax.transData.transform([(max(x_lo, x_min), max(y_lo, y_min)),
                                                 (min(x_hi, x_max), min(y_hi, y_max))])
        (px, py), = ax.transData.transform([(x, y)])
        marks += [(px - 3, b, px + 3, d), (a, py - 3, c, py + 3)]
    placed: list[tuple[float, float, float, float]] = []

    def clashes(b) -> int:
        out = b.x0 < inside.x0 or b.x1 > inside.x1 or b.y0 < inside.y0 or b.y1 > inside.y1
        boxes = placed + marks
        return out * 100 + sum(b.x0 < x1 and x0 < b.x1 and b.y0 < y1 and y0 < b.y1 for x0, y0, x1, y1 in boxes)

    for label in sorted(labels, key=lambda a: -ax.transData.transform(a.xy)[1]):  # from the top down
        box = _text_box(label, renderer)
        w, h = box.width * to_pt, box.height * to_pt
        best = None
        for step in range(12):
            dy = (step + 1) // 2 * (1 if step % 2 else -1) * (h + 1)
            for dx in (4, -w - 4):
                label.xyann = (dx, 3 + dy)
                score = clashes(_text_box(label, renderer))
                if best is None or score < best[0]:
                    best = (score, (dx, 3 + dy))
                if score == 0:
                    break
            if best[0] == 0:
                break
        label.xyann = best[1]
        label.arrow_patch.set_visible(best[1][1] != 3)  # beside its point: no leader line needed
        b = _text_box(label, renderer)
        placed.append((b.x0 - 1, b.y0 - 1, b.x1 + 1, b.y1 + 1))


def _finish(fig, labelled: dict | None = None):
    """Wrap panel titles to their axes and the suptitle to the figure; place point labels where they fit.

    Laying a figure out costs as much as drawing it, so it is done here only when needed: a title wider than
    60% of its panel's slot (narrower ones fit whatever the tick labels take), or point labels to place.
    """
    renderer = fig.canvas.get_renderer()
    if fig._suptitle is not None and fig._suptitle.get_window_extent(renderer).width > 0.96 * fig.bbox.width:
        _wrap_to(fig._suptitle, 0.96 * fig.bbox.width)
    titled = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    slot = lambda ax: ax.get_subplotspec().get_position(fig).width * fig.bbox.width  # noqa: E731
    wide = [ax for ax in titled if ax.title.get_window_extent(renderer).width > 0.6 * slot(ax)]
    if wide or labelled:
        fig.get_layout_engine().execute(fig)  # constrained layout places the axes
        for ax in wide:
            _wrap_to(ax.title, ax.get_window_extent(renderer).width)
    if labelled:
        if wide:
            fig.get_layout_engine().execute(fig)  # again, with the titles' final heights
        for ax, (labels, points, bars) in labelled.items():
            _place_labels(ax, labels, points, bars)
    return fig


def _log_err(values, lows, highs):
    """Asymmetric error bars for log axes: an end at or below zero runs off the axis (to 0 = −∞)."""
    values, lows, highs = (np.asarray(x, dtype=float) for x in (values, lows, highs))
    lows = np.where(lows > 0, lows, values * LOG_FLOOR)
    return np.vstack([values - lows, highs - values])


def _log_limits(ax, axis: str, *arrays) -> None:
    """Limits from the values and the positive interval ends, so a bar reaching 0 runs off the axis."""
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values) & (values > 0)]
    if len(values):
        lo, hi = values.min(), values.max()
        span = max(hi / lo, 10.0) ** 0.06
        (ax.set_xlim if axis == "x" else ax.set_ylim)(lo / span, hi * span)


def _fixed(df: pd.DataFrame) -> pd.DataFrame:
    df = prepare(df)
    return df[~df["training"] & (df["param_group"] != CURVE_GROUP)]


def _legend(fig, colours: dict, labels, title: str = "estimator") -> None:
    from matplotlib.lines import Line2D

    shown = [label for label in colours if label in set(labels)]
    handles = [Line2D([], [], color=colours[label], marker="o", linestyle="-") for label in shown]
    fig.legend(handles, shown, loc="outside lower center", frameon=False, title=title, ncols=min(len(shown), 4))


# -- variance (and work-normalised variance) per estimator -------------------------------------------------

def variance_data(df: pd.DataFrame, metric: str = "variance") -> pd.DataFrame:
    """Fixed tasks: one row per (task, group, estimator) with the pooled value and 95% interval."""
    rows = _fixed(df)
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        return pd.DataFrame(columns=["task_label", "param_group", "estimator_label", "value", "ci_low", "ci_high",
                                     "n", "method"])
    out = pool(rows, ["task_label", "param_group", "estimator_label"])
    return out.sort_values(["task_label", "param_group", "value"]).reset_index(drop=True)


def variance_figure(df: pd.DataFrame, metric: str = "variance", colours: dict | None = None):
    """Horizontal error bars on a log axis, estimators sorted by value, one panel per task (and group).

    Points are coloured by estimator name (``colours``: name -> colour), so the
    configurations of one estimator read as one family.
    """
    data = variance_data(df, metric)
    if data.empty:
        return None
    names = data["estimator_label"].str.split("(").str[0]
    colours = _complete(colours, names)
    panels = list(data.assign(name=names).groupby(["task_label", "param_group"], sort=True))
    titles = _panel_titles(k for k, _ in panels)
    heights = [0.8 + 0.3 * len(p) for _, p in panels]
    with _style():
        fig, axes = _figure(len(panels), panel=(7.0, 0), heights=heights)
        for ax, ((task, group), p) in zip(axes.flat, panels):
            y = np.arange(len(p))
            for name, at in p.assign(y=y).groupby("name"):  # one errorbar call per colour
                ax.errorbar(at["value"], at["y"], xerr=_log_err(at["value"], at["ci_low"], at["ci_high"]), fmt="o",
                            color=colours[name], capsize=3)
            ax.set_yticks(y, p["estimator_label"])
            ax.set_ylim(-0.6, len(p) - 0.4)
            ax.set_xscale("log")
            _log_limits(ax, "x", p["value"], p["ci_low"], p["ci_high"])
            ax.set_xlabel(_METRIC_LABELS.get(metric, metric))
            ax.set_title(titles[task, group])
        seeds = int(data["n"].max())
        fig.suptitle(f"{_METRIC_LABELS.get(metric, metric)} per estimator, 95% intervals"
                     + (f" (up to {seeds} runs pooled)" if seeds > 1 else ""))
        return _finish(fig)


_METRIC_LABELS = {
    "variance": "variance tr Cov(ĝ)",
    "variance_per_element": "variance per element",
    "work_normalized_variance": "variance × seconds per estimate",
    "bias_norm": "bias ‖E ĝ − g‖",
}


def work_normalized_figure(df: pd.DataFrame, colours: dict | None = None):
    """Variance × wall time per estimate (timing depends on the machine and its load)."""
    return variance_figure(df, "work_normalized_variance", colours)


# -- bias against variance ------------------------------------------------------------------------------

def bias_variance_data(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed tasks with a reference: variance and bias (with intervals) and the bias noise floor per estimator."""
    rows = _fixed(df)
    by = ["task_label", "param_group", "estimator_label"]
    parts = {}
    for metric, name in (("variance", "variance"), ("bias_norm", "bias"), ("bias_noise_floor", "floor")):
        sel = rows[rows["metric"] == metric]
        if sel.empty:
            return pd.DataFrame(columns=by + ["variance", "bias"])
        p = pool(sel, by)[by + ["value", "ci_low", "ci_high", "n"]]
        parts[name] = p.rename(columns={"value": name, "ci_low": f"{name}_low", "ci_high": f"{name}_high",
                                        "n": f"{name}_n"})
    out = parts["variance"].merge(parts["bias"], on=by).merge(parts["floor"][by + ["floor"]], on=by)
    return out.sort_values(by).reset_index(drop=True)


def bias_variance_figure(df: pd.DataFrame, colours: dict | None = None):
    """Bias against variance on log–log axes; grey ticks mark each estimator's bias noise floor."""
    data = bias_variance_data(df)
    if data.empty:
        return None
    data = data.assign(name=data["estimator_label"].str.split("(").str[0])
    colours = _complete(colours, data["name"])
    panels = list(data.groupby(["task_label", "param_group"], sort=True))
    titles = _panel_titles(k for k, _ in panels)
    labelled = {}
    with _style():
        fig, axes = _figure(len(panels), ncols=2, panel=(5.0, 3.8))
        for ax, ((task, group), p) in zip(axes.flat, panels):
            for name, q in p.groupby("name"):  # one errorbar call per colour
                ax.errorbar(q["variance"], q["bias"], xerr=_log_err(q["variance"], q["variance_low"],
                                                                    q["variance_high"]),
                            yerr=_log_err(q["bias"], q["bias_low"], q["bias_high"]), fmt="o", color=colours[name],
                            capsize=2)
            ax.plot(p["variance"], p["floor"], marker="_", markersize=14, color="0.5", linestyle="none")
            if len(p) <= ANNOTATE_MAX:
                points = list(zip(p["variance"], p["bias"]))
                labels = [ax.annotate(label, xy, xytext=(4, 3), textcoords="offset points", fontsize=7, color="0.25",
                                      arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkA": 0,
                                                  "shrinkB": 3}, in_layout=False)
                          for label, xy in zip(p["estimator_label"], points)]
                bars = list(zip(p["variance_low"], p["variance_high"], p["bias_low"], p["bias_high"]))
                labelled[ax] = (labels, points, bars)
            ax.set_xscale("log")
            ax.set_yscale("log")
            _log_limits(ax, "x", p["variance"], p["variance_low"], p["variance_high"])
            _log_limits(ax, "y", p["bias"], p["bias_low"], p["bias_high"], p["floor"])
            ax.set_xlabel(_METRIC_LABELS["variance"])
            ax.set_ylabel(_METRIC_LABELS["bias_norm"])
            ax.set_title(titles[task, group])
        _legend(fig, colours, data["name"])
        fig.suptitle("Bias against variance, 95% intervals (grey: bias noise floor; below it bias is not resolved)")
        return _finish(fig, labelled)


# -- sweeps over an estimator parameter (τ, gap, k, ...) ------------------------------------------------

def sweep_parameters(df: pd.DataFrame) -> list[str]:
    """Numeric estimator parameters that take ≥ 2 values for one estimator on one fixed task."""
    found = set()
    for text in _fixed(df)["estimator_params"].unique():
        found |= {k for k, v in json.loads(text).items() if _numeric(v)}
    return sorted(k for k in found if not sweep_data(df, k).empty)


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sweep_data(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Variance and bias against parameter ``key``: one row per (task, group, metric, line, x).

    A line is an estimator with its other parameters fixed (labelled without ``key``);
    only lines with ≥ 2 values of ``key`` are kept.
    """
    rows = _fixed(df)
    rows = rows[rows["metric"].isin(SWEEP_METRICS)].copy()
    cols = ["task_label", "param_group", "metric", "line", "x", "value", "ci_low", "ci_high", "n"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows["x"] = rows["estimator_params"].map(lambda t: json.loads(t).get(key))
    rows = rows[rows["x"].map(_numeric)].copy()
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows["x"] = rows["x"].astype(float)
    rows["line"] = estimator_labels(rows, drop=(key,))
    out = pool(rows, ["task_label", "param_group", "metric", "line", "x"])
    counts = out.groupby(["task_label", "param_group", "line"])["x"].transform("nunique")
    return out[counts >= 2][cols].sort_values(cols[:5]).reset_index(drop=True)


def sweep_figure(df: pd.DataFrame, key: str):
    """Variance (top) and bias (bottom) against ``key``, one column per task, one line per estimator."""
    import seaborn as sns
    from matplotlib.ticker import NullLocator

    data = sweep_data(df, key)
    if data.empty:
        return None
    colours = palette(data["line"])
    columns = sorted(data.groupby(["task_label", "param_group"]).groups)
    titles = _panel_titles(columns)
    metrics = [m for m in SWEEP_METRICS if m in set(data["metric"])]
    with _style():
        fig, axes = _figure(len(columns) * len(metrics), ncols=len(columns), nrows=len(metrics))
        for i, metric in enumerate(metrics):
            for j, (task, group) in enumerate(columns):
                ax = axes[i, j]
                p = data[(data["metric"] == metric) & (data["task_label"] == task) & (data["param_group"] == group)]
                for line, q in p.groupby("line"):
                    ax.fill_between(q["x"], np.where(q["ci_low"] > 0, q["ci_low"], q["value"] * LOG_FLOOR),
                                    q["ci_high"], color=colours[line], alpha=0.2, linewidth=0)
                sns.lineplot(data=p, x="x", y="value", hue="line", palette=colours, marker="o", ax=ax,
                             legend=False, errorbar=None)
                ax.set_yscale("log")
                _log_limits(ax, "y", p["value"], p["ci_low"], p["ci_high"])
                if (p["x"] > 0).all() and p["x"].max() / p["x"].min() >= 8:
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_locator(NullLocator())  # the swept values are the ticks
                ticks = sorted(p["x"].unique())
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                ax.set_xlabel(key)
                ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
                ax.set_title(titles[task, group])
        _legend(fig, colours, data["line"])
        fig.suptitle(f"Sweep over {key}: variance and bias with 95% bands")
        return _finish(fig)


# -- over training steps: gradient metrics and training curves ------------------------------------------

def steps_data(df: pd.DataFrame) -> pd.DataFrame:
    """Training tasks: gradient variance per element and bias at each measured step, pooled over seeds."""
    df = prepare(df)
    rows = df[df["training"] & (df["param_group"] != CURVE_GROUP) & df["metric"].isin(STEP_METRICS)]
    if rows.empty:
        return pd.DataFrame(columns=["task_label", "param_group", "metric", "estimator_label", "step", "value",
                                     "ci_low", "ci_high", "n"])
    out = pool(rows, ["task_label", "param_group", "metric", "estimator_label", "step"])
    return out.sort_values(["task_label", "param_group", "metric", "estimator_label", "step"]).reset_index(drop=True)


def curves_data(df: pd.DataFrame) -> pd.DataFrame:
    """Training curves (param_group ""): mean over seeds at each step with a 95% t band over seeds."""
    df = prepare(df)
    rows = df[df["param_group"] == CURVE_GROUP]
    if rows.empty:
        return pd.DataFrame(columns=["task_label", "metric", "estimator_label", "step", "value", "ci_low",
                                     "ci_high", "n"])
    out = pool(rows, ["task_label", "metric", "estimator_label", "step"])
    return out.sort_values(["task_label", "metric", "estimator_label", "step"]).reset_index(drop=True)


def _lines_figure(data: pd.DataFrame, panels: list[tuple], title: str, colours: dict, log: bool, ncols: int = 2):
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    with _style():
        fig, axes = _figure(len(panels), ncols=ncols)
        for ax, (name, p, ylabel) in zip(axes.flat, panels):
            for label, q in p.groupby("estimator_label"):
                low = q["ci_low"].where(q["ci_low"] > 0, q["value"] * LOG_FLOOR) if log else q["ci_low"]
                ax.fill_between(q["step"], low, q["ci_high"], color=colours[label], alpha=0.2, linewidth=0)
            sns.lineplot(data=p, x="step", y="value", hue="estimator_label", palette=colours, ax=ax, legend=False,
                         errorbar=None, marker="o" if p["step"].nunique() <= 30 else None)
            if log:
                ax.set_yscale("log")
                _log_limits(ax, "y", p["value"], p["ci_low"], p["ci_high"])
            else:
                ax.ticklabel_format(axis="y", useOffset=False)  # "+2.023e2" above the axis would meet the title
            steps = sorted(p["step"].unique())
            if len(steps) == 1:
                ax.set_xticks(steps)  # not fractional ticks around a lone step
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("step (epoch)")
            ax.set_ylabel(ylabel)
            ax.set_title(name)
        _legend(fig, colours, data["estimator_label"])
        fig.suptitle(title)
        return _finish(fig)


def steps_figure(df: pd.DataFrame, colours: dict | None = None):
    """Variance per element and bias of the gradient over training, one panel per (task, group, metric)."""
    data = steps_data(df)
    if data.empty:
        return None
    colours = _complete(colours, data["estimator_label"])
    order = {m: i for i, m in enumerate(STEP_METRICS)}
    groups = sorted(data.groupby(["task_label", "param_group", "metric"]), key=lambda kv: (*kv[0][:2], order[kv[0][2]]))
    titles = _panel_titles((t, g) for (t, g, _), _ in groups)
    panels = [(titles[t, g], p, _METRIC_LABELS.get(m, m)) for (t, g, m), p in groups]
    return _lines_figure(data, panels, "Gradient variance and bias over training (bands: 95% over seeds, or "
                         "the run's own interval for one seed)", colours, log=True, ncols=data["metric"].nunique())


def curves_figure(df: pd.DataFrame, colours: dict | None = None):
    """Training curves (negative ELBO, accuracy, ...) with 95% bands over seeds."""
    data = curves_data(df)
    if data.empty:
        return None
    colours = _complete(colours, data["estimator_label"])
    panels = [(f"{t}: {m}", p, m) for (t, m), p in data.groupby(["task_label", "metric"], sort=True)]
    return _lines_figure(data, panels, "Training curves: mean over seeds, 95% t bands", colours, log=False)
