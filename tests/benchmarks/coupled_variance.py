"""Coupled categorical DisARM against RLOO(2) at equal evaluations: variance on the toy tasks (docs/frontier.md).

    OMP_NUM_THREADS=1 python tests/benchmarks/coupled_variance.py [--samples 20000] [--seed 4]

Prints a Markdown table: per task, the variance (trace of the covariance) of 20,000 estimates
at the task's parameters for rloo(m=2) and each coupled variant, all with two evaluations of f,
and whether each is within 4 noise floors of the exact gradient.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import bias_ok, measure_spec  # noqa: E402

TASKS = {
    "toy-quadratic (K = 10)": "toy-quadratic",
    "four-category quadratic": "toy-quadratic(logits=[0.5, -0.3, 1.0, 0.0], target=[0.1, 0.5, 0.2, 0.2])",
    "masked quadratic (K = 5)": "toy-quadratic(logits=[0.3, -0.2, 1.0, 0.5, 0.1], target=[0.1, 0.6, 0.2, 0.1, 0.0], "
                                "mask=[1, 0, 1, 1, 1])",
    "toy-latent": "toy-latent",
    "toy-bernoulli": "toy-bernoulli",
    "sine": "toy-bernoulli(objective='sine', logits=[0.5, -1.0, 0.0, 1.5])",
}
SPECS = ["rloo(m=2)", "disarm-sb", "disarm-sb(order='ascending')", "disarm-sb(order='descending')", "disarm-tree",
         "disarm-iw"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    start = time.perf_counter()
    print("| task | " + " | ".join(f"`{s}`" for s in SPECS) + " |")
    print("|---" * (len(SPECS) + 1) + "|")
    for label, task in TASKS.items():
        cells = []
        for spec in SPECS:
            group = measure_spec(task, spec, samples=args.samples, seed=args.seed)[0].groups["logits"]
            cells.append(f"{group.metrics['variance'].value:.3g}" + ("" if bias_ok(group) else " (biased?)"))
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{args.samples} estimates each, seed {args.seed}; {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
