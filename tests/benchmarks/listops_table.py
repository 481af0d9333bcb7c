"""Summarise ListOps runs from their Parquet results: accuracy over seeds, and merge-scorer gradients.

    python tests/benchmarks/listops_table.py RESULTS_DIR [--step final|0|N] [--group query|model]

Accuracy: the last checkpoint's validation (official file unless data_dir had one) and
test accuracy, mean ± standard deviation over seeds, with the training budget. Gradients:
bias, its noise floor, relative bias, variance and cosine against the reference at one
measurement step (default: each run's last), averaged over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def _setting(row) -> tuple[str, str]:
    """(τ as text, "–" if none; the estimator's name with GR-MC's k)."""
    params = json.loads(row["estimator_params"])
    name = row["estimator"] + (f"(k={params['k']})" if "k" in params else "")
    return (f"{params['tau']:g}" if "tau" in params else "–"), name


def load(results: str) -> pd.DataFrame:
    """Every run's metrics under ``results`` (other files, such as logs, are ignored)."""
    df = pd.concat([pd.read_parquet(path) for path in sorted(Path(results).glob("*/metrics.parquet"))])
    df = df[df["task"] == "listops"].copy()
    settings = df.apply(_setting, axis=1, result_type="expand")
    df["tau"], df["name"] = settings[0], settings[1]
    return df


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    curves = df[df["param_group"] == ""]
    last = curves[curves["step"] == curves.groupby(["run_id", "estimator_label", "seed"])["step"].transform("max")]
    wide = last.pivot_table(index=["tau", "name", "seed"], columns="metric", values="value").reset_index()
    columns = dict(seeds=("seed", "nunique"),
                   valid_mean=("valid/accuracy", "mean"), valid_std=("valid/accuracy", "std"),
                   test_mean=("test/accuracy", "mean"), test_std=("test/accuracy", "std"),
                   train_seconds=("train/seconds", "mean"), epochs=("train/epoch", "mean"))
    out = wide.groupby(["tau", "name"]).agg(**{k: v for k, v in columns.items() if v[0] in wide.columns})
    return out.sort_index(ascending=[False, True])


def gradient_table(df: pd.DataFrame, step: str, group: str) -> pd.DataFrame:
    grads = df[(df["param_group"] == group) & (df["status"] == "ok")]
    if step == "final":
        grads = grads[grads["step"] == grads.groupby(["run_id", "estimator_label", "seed"])["step"].transform("max")]
    else:
        grads = grads[grads["step"] == int(step)]
    metrics = ["bias_norm", "bias_noise_floor", "relative_bias", "variance", "cosine", "reference_norm"]
    if grads.empty:
        return pd.DataFrame(columns=["seeds", *metrics])
    wide = grads[grads["metric"].isin(metrics)].pivot_table(index=["tau", "name", "seed"], columns="metric",
                                                            values="value").reset_index()
    out = wide.groupby(["tau", "name"])[metrics].mean()
    out.insert(0, "seeds", wide.groupby(["tau", "name"])["seed"].nunique())
    out["reference"] = grads.groupby(["tau", "name"])["reference"].first()
    return out.sort_index(ascending=[False, True])


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table (pandas' to_markdown needs tabulate, which gradbench does not depend on)."""
    flat = table.reset_index()
    cells = [[f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in row] for row in flat.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, flat.columns)) + " |", "|" + "---|" * len(flat.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--step", default="final", help="measurement step: final (each run's last), 0, or a number")
    parser.add_argument("--group", default="query", help="parameter group: query (the merge scorer) or model")
    args = parser.parse_args()
    df = load(args.results)
    print("ListOps accuracy at the last checkpoint (mean ± std over seeds; chance 0.10):")
    print(markdown(accuracy_table(df)))
    print(f"\nGradient of '{args.group}' at step {args.step} (mean over seeds):")
    print(markdown(gradient_table(df, args.step, args.group)))


if __name__ == "__main__":
    main()
