"""Torch threads for `gradbench run`: 1 thread vs torch's default, on a quiet and a busy machine.

Each measurement is a fresh process that sets its thread count, then times
``prepare`` + ``execute`` of one toy-task run (imports excluded). "Busy" runs the same
with one CPU-burning process per core in the background (started here, ended by pid).
The toy tasks are float64: their numbers must be identical at every thread count,
which is checked (bit for bit, every stored value).

Usage: python tests/benchmarks/threads.py [--repeats 3]
Prints one line per (task, condition): median seconds at 1 thread and at torch's
default, and their ratio (>1: the default is slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CASES = [
    ("toy-quadratic", ["reinforce", "rloo", "stgs", "gst"], 10_000),
    ("toy-bernoulli(dim=5)", ["reinforce", "rloo", "stgs"], 10_000),
    ("toy-latent", ["reinforce", "gst"], 10_000),
]

CHILD = r"""
import json, sys, time
import torch
threads = int(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
from gradbench.run import RunOptions, execute, prepare
task, estimators, samples, out = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
start = time.perf_counter()
result = execute(prepare(task, estimators, RunOptions(samples=samples, out=out, device="cpu")))
seconds = time.perf_counter() - start
values = [[r["estimator_label"], r["param_group"], r["metric"], r["value"].hex(), r["ci_low"].hex(), r["ci_high"].hex()]
          for r in result.rows if r["metric"] not in ("seconds_per_estimate", "work_normalized_variance")]
print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(), "values": values}))
"""


def measure(task: str, estimators: list[str], samples: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", CHILD, str(threads), task, json.dumps(estimators), str(samples), out],
                              capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} CPUs; load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'task':24s} {'condition':9s} {'1 thread':>9s} {'default':>9s} {'(n)':>4s} {'ratio':>6s}  identical")
    for condition in ("quiet", "busy"):
        background = burners(cores) if condition == "busy" else []
        try:
            time.sleep(0.5 if background else 0)
            for task, estimators, samples in CASES:
                runs = {1: [], 0: []}
                for _ in range(args.repeats):
                    for threads in (1, 0):  # interleaved, so drifting load hits both alike
                        runs[threads].append(measure(task, estimators, samples, threads))
                one = statistics.median(r["seconds"] for r in runs[1])
                default = statistics.median(r["seconds"] for r in runs[0])
                identical = all(r["values"] == runs[1][0]["values"] for r in runs[1] + runs[0])
                print(f"{task:24s} {condition:9s} {one:8.2f}s {default:8.2f}s {runs[0][0]['threads']:4d} "
                      f"{default / one:6.2f}  {'yes' if identical else 'NO'}", flush=True)
        finally:
            for p in background:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
