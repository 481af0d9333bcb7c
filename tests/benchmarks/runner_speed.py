"""Benchmark: vectorised engine vs the per-draw loop, and memory flat in S.

    python tests/benchmarks/runner_speed.py [--task toy-quadratic] [--estimator reinforce] [--device cpu|cuda]
        [--json PATH]

Prints estimates per second of both engines, measured in this one process on the
same problem (the ratio is what carries over between machines), and the peak
resident memory of separate processes drawing 1e4, 1e5 and 1e6 estimates (on CUDA also
their peak allocated GPU memory). CUDA timings synchronise before the clock stops.
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(task: str, estimator: str, samples: int, engine: str, chunk: int, device: torch.device) -> float:
    problem = tasks.build(task).problem(device, torch.float64)
    ref = resolve_reference(problem, "auto", 100_000, 0)
    est = estimators.build(estimator)
    measure(problem, est, ref.gradient, MeasureConfig(min(samples, 2000), 0, chunk, engine))  # warm caches
    _sync(device)
    start = time.perf_counter()
    measure(problem, est, ref.gradient, MeasureConfig(samples, 0, chunk, engine))
    _sync(device)
    return samples / (time.perf_counter() - start)


def peak_memory(task: str, estimator: str, samples: int, device: str) -> dict:
    """Peak RSS (MB) of a fresh process that draws ``samples`` estimates; on CUDA also its peak GPU MB."""
    code = (
        "import json, resource, sys, torch\n"
        "from gradbench.references import resolve_reference\n"
        "from gradbench.registry import estimators, tasks\n"
        "from gradbench.engine import MeasureConfig, measure\n"
        f"p = tasks.build({task!r}).problem(torch.device({device!r}), torch.float64)\n"
        "r = resolve_reference(p, 'auto', 100_000, 0)\n"
        f"m = measure(p, estimators.build({estimator!r}), r.gradient, MeasureConfig({samples}, 0))\n"
        "gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None\n"
        "print(json.dumps({'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'gpu_mb': gpu}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="toy-quadratic")
    parser.add_argument("--estimator", default="reinforce")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--loop-samples", type=int, default=20_000)
    parser.add_argument("--memory-samples", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{args.estimator} on {args.task}, float64, {where}, torch {torch.__version__}")
    fast = rate(args.task, args.estimator, args.samples, "vectorized", 1 << 16, device)
    slow = rate(args.task, args.estimator, args.loop_samples, "loop", 1 << 16, device)
    print(f"vectorised engine: {fast:,.0f} estimates/s (S = {args.samples:,})")
    print(f"loop engine:       {slow:,.0f} estimates/s (S = {args.loop_samples:,})")
    print(f"speed-up:          {fast / slow:,.0f}x")
    figures = {"device": args.device, "task": args.task, "estimator": args.estimator, "samples": args.samples,
               "vectorized_per_s": fast, "loop_samples": args.loop_samples, "loop_per_s": slow, "memory": {}}
    for samples in args.memory_samples:
        peak = peak_memory(args.task, args.estimator, samples, args.device)
        figures["memory"][samples] = peak
        gpu = "" if peak["gpu_mb"] is None else f", peak GPU memory {peak['gpu_mb']:,.0f} MB"
        print(f"peak RSS, S = {samples:>9,}: {peak['rss_mb']:,.0f} MB{gpu}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
