"""Compare the non-timing values of two result folders row by row (used by tests/gpu/check.sh).

    python tests/gpu/compare_runs.py A B [--label "CUDA run 1 vs CUDA run 2"] [--json PATH]

Rows are matched on (estimator_label, param_group, metric, step); timing metrics
(seconds_per_estimate, work_normalized_variance) are left out because wall time is never
reproducible. Prints how many values are bit-identical and the largest relative difference
of the others: two runs on one device with one seed should be identical; a CPU and a CUDA
run draw different noise (each device's own generator, bench/noise.py) and so agree only
statistically. Reports, asserts nothing.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

TIMING = {"seconds_per_estimate", "work_normalized_variance"}
KEY = ["estimator_label", "param_group", "metric", "step"]


def values(folder: str) -> pd.Series:
    df = pd.read_parquet(folder)
    df = df[~df["metric"].isin(TIMING) & df["value"].notna()]
    if df["run_id"].nunique() != 1:
        raise SystemExit(f"{folder}: expected one run, found {df['run_id'].nunique()}")
    return df.set_index([k for k in KEY if k in df.columns])["value"].sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--label", default="")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    a, b = values(args.a), values(args.b)
    both = a.index.intersection(b.index)
    x, y = a.loc[both].to_numpy(), b.loc[both].to_numpy()
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    rel = np.abs(x - y) / np.maximum(np.abs(x), np.abs(y)).clip(min=1e-300)
    worst = int(np.argmax(np.where(same, -1, rel))) if (~same).any() else None
    out = {"label": args.label, "values": int(len(both)), "identical": int(same.sum()),
           "only_in_one": int(len(a.index.symmetric_difference(b.index))),
           "max_relative_difference": float(rel[~same].max()) if (~same).any() else 0.0,
           "median_relative_difference": float(np.median(rel[~same])) if (~same).any() else 0.0,
           "worst": None if worst is None else {"key": [str(k) for k in both[worst]], "a": x[worst], "b": y[worst]}}
    print(f"{args.label}: {out['identical']} of {out['values']} non-timing values bit-identical; "
          f"max relative difference of the rest {out['max_relative_difference']:.3g} "
          f"(median {out['median_relative_difference']:.3g}); {out['only_in_one']} rows in one folder only")
    if worst is not None:
        print(f"  largest difference at {out['worst']['key']}: {x[worst]!r} vs {y[worst]!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
