"""Check a sweep's results folder, and optionally that another folder holds the same numbers.

    python tests/benchmarks/sweep_check.py OUT --suite gst-table-cpu [--seed 0] [--same-as OTHER]

Checks that every cell of the suite is present exactly once (one folder, sidecar
``complete``), that every Parquet file reads on its own and the folder reads as one
table, that no row is duplicated and no hidden leftovers remain; with ``--same-as``,
that every non-timing value is bit-identical to the other folder's for the cells both hold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from gradbench.sweep.grid import expand, resolve
from gradbench.sweep.suites import load_grids

TIMING = {"seconds_per_estimate", "work_normalized_variance", "train/seconds"}
KEY = ["run_id", "param_group", "step", "metric"]


def check(out: Path, suite: str, seeds: list[int] | None) -> pd.DataFrame:
    _, grids = load_grids(suite)
    if seeds:
        grids = [g.__class__(**{**g.__dict__, "options": {**g.options, "seed": tuple(seeds)}}) for g in grids]
    cells, _ = resolve([t for g in grids for t in expand(g)], "cpu")
    folders = sorted(p.name for p in out.iterdir() if not p.name.startswith((".", "_")))
    expected = sorted(c.name for c in cells)
    missing, extra = sorted(set(expected) - set(folders)), sorted(set(folders) - set(expected))
    print(f"{out}: {len(expected)} cells expected, {len(folders)} folders, missing {missing}, extra {extra}")
    for name in folders:
        pq.read_table(out / name / "metrics.parquet")  # each file readable on its own
        status = json.loads((out / name / "_run.json").read_text())["cell"]["status"]
        assert status == "complete", f"{name}: {status}"
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".gradbench"]
    df = pd.read_parquet(out)
    duplicates = int(df.duplicated(KEY).sum())
    print(f"rows {len(df)}, run ids {df['run_id'].nunique()}, duplicated rows {duplicates}, hidden leftovers {leftovers}")
    assert not missing and not duplicates and not leftovers and df["run_id"].nunique() == len(folders)
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--seed", type=int, action="append")
    parser.add_argument("--same-as", type=Path)
    args = parser.parse_args()
    df = check(args.out, args.suite, args.seed)
    if args.same_as is not None:
        other = pd.read_parquet(args.same_as)
        keep = lambda d: d[~d["metric"].isin(TIMING)].set_index(KEY)[["value", "ci_low", "ci_high"]]  # noqa: E731
        a, b = keep(df), keep(other)
        common = a.index.intersection(b.index)
        a, b = a.loc[common].sort_index(), b.loc[common].sort_index()
        same = ((a == b) | (a.isna() & b.isna())).all(axis=1)
        print(f"{len(common)} non-timing rows in both; bit-identical: {int(same.sum())}; differing: {int((~same).sum())}")
        if not same.all():
            worst = ((a - b).abs() / b.abs()).max(axis=1)[~same].sort_values().tail(5)
            print("largest relative differences:\n" + worst.to_string())
            sys.exit(1)


if __name__ == "__main__":
    main()
