"""Benchmark: vectorised engine vs the per-draw loop, and memory flat in S.

    python tests/benchmarks/runner_speed.py [--task toy-quadratic] [--estimator reinforce]

Prints estimates per second of both engines, measured in this one process on the
same problem (the ratio is what carries over between machines), and the peak
resident memory of separate processes drawing 1e4, 1e5 and 1e6 estimates.
Nothing here is asserted: performance is reported, not tested.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from gradbench.references import resolve_reference
from gradbench.registry import estimators, tasks
from gradbench.engine import MeasureConfig, measure


def rate(task: str, estimator: str, samples: int, engine: str, chunk: int) -> float:
    problem = tasks.build(task).problem(torch.device("cpu"), torch.float64)
    ref = resolve_reference(problem, "auto", 100_000, 0)
    est = estimators.build(estimator)
    measure(problem, est, ref.gradient, MeasureConfig(min(samples, 2000), 0, chunk, engine))  # warm caches
    start = time.perf_counter()
    measure(problem, est, ref.gradient, MeasureConfig(samples, 0, chunk, engine))
    return samples / (time.perf_counter() - start)


def peak_memory(task: str, estimator: str, samples: int) -> float:
    """Peak RSS (MB) of a fresh process that draws ``samples`` estimates."""
    code = (
        "import json, resource, sys, torch\n"
        "from gradbench.references import resolve_reference\n"
        "from gradbench.registry import estimators, tasks\n"
        "from gradbench.engine import MeasureConfig, measure\n"
        f"p = tasks.build({task!r}).problem(torch.device('cpu'), torch.float64)\n"
        "r = resolve_reference(p, 'auto', 100_000, 0)\n"
        f"m = measure(p, estimators.build({estimator!r}), r.gradient, MeasureConfig({samples}, 0))\n"
        "print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="toy-quadratic")
    parser.add_argument("--estimator", default="reinforce")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--loop-samples", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{args.estimator} on {args.task}, float64, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    fast = rate(args.task, args.estimator, args.samples, "vectorized", 1 << 16)
    slow = rate(args.task, args.estimator, args.loop_samples, "loop", 1 << 16)
    print(f"vectorised engine: {fast:,.0f} estimates/s (S = {args.samples:,})")
    print(f"loop engine:       {slow:,.0f} estimates/s (S = {args.loop_samples:,})")
    print(f"speed-up:          {fast / slow:,.0f}x")
    for samples in (10_000, 100_000, 1_000_000):
        print(f"peak RSS, S = {samples:>9,}: {peak_memory(args.task, args.estimator, samples):,.0f} MB")


if __name__ == "__main__":
    main()
