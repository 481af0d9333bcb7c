"""The mnist-vae comparison table, from the Parquet results of `gradbench sweep --suite gst-table-cpu`
(or gst-table).

    python tests/benchmarks/vae_table.py RESULTS [--markdown]

Per temperature and estimator, over seeds (mean ± standard deviation): the last epoch's
test negative ELBO (one hard sample, the GST paper's metric), test IWAE bound, and the
encoder gradient's variance per element (the GST repository's metric) and relative bias
against the REINFORCE-LOO reference; then the same per measured epoch (over training);
then whether the GST paper's ordering holds. Runs of one seed share the initialisation
and data order whatever the estimator, so differences are also given paired by seed.
"""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd

PAPER_ORDER = ["GST-1.2", "GST-1.0", "GR-MC100", "STGS"]  # best to worst at both τ (Fan et al. 2022, Table 1)


def display_name(name: str, params: str) -> tuple[str, float]:
    """('GST-1.2', τ) from an estimator's name and parameters JSON."""
    p = json.loads(params)
    label = {"stgs": "STGS", "gr-mc": f"GR-MC{p.get('k')}", "gst": f"GST-{p.get('gap')}"}.get(name, name)
    return label, float(p.get("tau", math.nan))


def load(path: str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    names = [display_name(n, p) for n, p in zip(df["estimator"], df["estimator_params"])]
    df["name"] = [n for n, _ in names]
    df["tau"] = [t for _, t in names]
    return df


def _pm(values: pd.Series, digits: int = 2, sci: bool = False) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    fmt = (lambda v: f"{v:.2e}") if sci else (lambda v: f"{v:.{digits}f}")  # noqa: E731
    return fmt(values.mean()) + (f" ± {fmt(values.std())}" if len(values) > 1 else "")


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """Training-curve values: one row per (tau, name, seed, step), one column per metric."""
    rows = df[(df["param_group"] == "") & (df["status"] == "ok")]
    return rows.pivot_table(index=["tau", "name", "seed", "step"], columns="metric", values="value").reset_index()


def gradients(df: pd.DataFrame, group: str = "encoder") -> pd.DataFrame:
    rows = df[(df["param_group"] == group) & (df["status"] == "ok")]
    wide = rows.pivot_table(index=["tau", "name", "seed", "step"], columns="metric", values="value").reset_index()
    wide["relative_floor"] = wide["bias_noise_floor"] / wide["reference_norm"]
    return wide


def final_table(df: pd.DataFrame) -> pd.DataFrame:
    c, g = curves(df), gradients(df)
    iwae = next((m for m in c.columns if str(m).startswith("test/iwae_")), None)
    out = []
    for (tau, name), runs in c.groupby(["tau", "name"]):
        last = runs[runs["step"] == runs["step"].max()]
        grads = g[(g["tau"] == tau) & (g["name"] == name)]
        grads = grads[grads["step"] == grads["step"].max()] if not grads.empty else grads
        out.append({
            "τ": tau, "estimator": name, "seeds": last["seed"].nunique(), "epoch": int(last["step"].max()),
            "test −ELBO": _pm(last["test/neg_elbo"]),
            (iwae or "test IWAE").replace("test/iwae_", "test IWAE-"): _pm(last[iwae]) if iwae else "–",
            "train −ELBO": _pm(last["train/neg_elbo"]),
            "encoder var/element": _pm(grads.get("variance_per_element", pd.Series(dtype=float)), sci=True),
            "encoder rel. bias": _pm(grads.get("relative_bias", pd.Series(dtype=float)), 3),
            "its noise floor": _pm(grads.get("relative_floor", pd.Series(dtype=float)), 3),
            "cosine": _pm(grads.get("cosine", pd.Series(dtype=float)), 3),
        })
    return _ordered(pd.DataFrame(out))


def training_table(df: pd.DataFrame) -> pd.DataFrame:
    c, g = curves(df), gradients(df)
    merged = g.merge(c[["tau", "name", "seed", "step", "test/neg_elbo"]], on=["tau", "name", "seed", "step"])
    out = []
    for (tau, name, step), rows in merged.groupby(["tau", "name", "step"]):
        out.append({"τ": tau, "estimator": name, "epoch": int(step), "test −ELBO": _pm(rows["test/neg_elbo"]),
                    "encoder var/element": _pm(rows["variance_per_element"], sci=True),
                    "encoder rel. bias": _pm(rows["relative_bias"], 3),
                    "its noise floor": _pm(rows["relative_floor"], 3), "cosine": _pm(rows["cosine"], 3)})
    return _ordered(pd.DataFrame(out), ["epoch"])


def _ordered(table: pd.DataFrame, extra: list[str] | None = None) -> pd.DataFrame:
    rank = {n: i for i, n in enumerate(PAPER_ORDER[::-1])}
    table["_r"] = table["estimator"].map(lambda n: rank.get(n, 99))
    table = table.sort_values(["τ", *(extra or []), "_r"], ascending=[False, *[True] * len(extra or []), True])
    return table.drop(columns="_r")


def verdict(df: pd.DataFrame) -> list[str]:
    """Does the paper's ordering (GST best, STGS worst, by final test −ELBO) hold? Paired by seed."""
    c = curves(df)
    last = c[c["step"] == c.groupby(["tau", "name", "seed"])["step"].transform("max")]
    lines = []
    for tau, rows in last.groupby("tau"):
        means = rows.groupby("name")["test/neg_elbo"].mean().sort_values()
        order = " < ".join(f"{n} {v:.2f}" for n, v in means.items())
        best, worst = means.index[0], means.index[-1]
        holds = best.startswith("GST") and worst == "STGS"
        per_seed = rows.pivot_table(index="seed", columns="name", values="test/neg_elbo")
        paired = []
        for gst in [n for n in per_seed.columns if n.startswith("GST")]:
            if "STGS" in per_seed.columns:
                diff = (per_seed["STGS"] - per_seed[gst]).dropna()
                paired.append(f"STGS − {gst} = {_pm(diff)} (paired by seed, {len(diff)} seeds)")
        lines.append(f"τ = {tau}: test −ELBO {order} (lower is better). "
                     f"Paper's ordering (GST best, STGS worst) {'holds' if holds else 'does not hold'}. "
                     + "; ".join(paired))
    return lines


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table (without needing the tabulate package)."""
    cells = [[str(c) for c in table.columns]] + [[str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in table.columns) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    df = load(args.results)
    show = markdown if args.markdown else (lambda t: t.to_string(index=False))  # noqa: E731
    print("Last epoch (mean ± sd over seeds)\n")
    print(show(final_table(df)))
    images = sorted({json.loads(p).get("measure_images", 1000) for p in df["task_params"].unique()})
    print(f"\nOver training (gradient measured at frozen parameters on {', '.join(map(str, images))} test images)\n")
    print(show(training_table(df)))
    print()
    for line in verdict(df):
        print(line)


if __name__ == "__main__":
    main()
