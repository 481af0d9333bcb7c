"""`gradbench verify` on every built-in estimator: estimator -> verdict, with the time each took.

    OMP_NUM_THREADS=1 python tests/benchmarks/verify_all.py [--budget quick] [--out /tmp/verify_all]

Each verdict must agree with the estimator's declarations (exit 0 from verify): the
script exits 1 if any built-in estimator's declaration is contradicted.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from gradbench.registry import estimators
from gradbench.verify import VerifyOptions, verify


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or tempfile.mkdtemp(prefix="verify_all-")
    names = [n for n in estimators.names() if estimators.info(n).source == "gradbench"]
    bad = 0
    print(f"{'estimator':<16} {'declared':<9} {'tasks':>5} {'biased on':>9} {'verdict':<13} {'seconds':>8}  detail")
    for name in names:
        t0 = time.perf_counter()
        v = verify(name, VerifyOptions(budget=args.budget, seed=args.seed, out=out))
        seconds = time.perf_counter() - t0
        declared = "unbiased" if v.declared.get("unbiased") is True else "biased"
        biased = sum(c.bias_detected for c in v.checks)
        verdict = "holds" if v.holds else "CONTRADICTED"
        bad += not v.holds
        detail = "; ".join(v.problems) if v.problems else ""
        print(f"{name:<16} {declared:<9} {len(v.checks):>5} {biased:>9} {verdict:<13} {seconds:>8.1f}  {detail}",
              flush=True)
    print(f"budget {args.budget}, seed {args.seed}, torch threads 1; {len(names)} estimators, {bad} contradicted; "
          f"run folders in {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
