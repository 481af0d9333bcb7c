"""Cost of toy-permutation's exact reference: enumerating the k! orderings, k = 4..9.

    OMP_NUM_THREADS=1 python tests/benchmarks/permutation_reference.py [--repeats 3]

For each k, the best of ``repeats`` wall times of ``references.exact_gradient`` (the
generic enumeration through the family's support and log_prob, exactly what a
``gradbench run`` does before measuring), on CPU in float64. The task allows k ≤ 8;
k = 9 is the largest the family's support enumerates (9! = 362,880 ≤ the reference's
2^20 configurations) and is timed through a PlackettLuce problem built directly.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from gradbench.families.permutation import MAX_ENUMERATED_ITEMS
from gradbench.references import exact_gradient
from gradbench.tasks.toy_permutation import MAX_ITEMS, PermutationProblem, ToyPermutation


def problem(k: int, objective: str) -> PermutationProblem:
    if k <= MAX_ITEMS:
        return ToyPermutation(k=k, objective=objective).problem(torch.device("cpu"), torch.float64)
    theta = torch.linspace(-1, 1.2, k, dtype=torch.float64)
    eye = torch.eye(k, dtype=torch.float64)
    return PermutationProblem(theta, objective, eye.flip(0), torch.arange(k, dtype=torch.float64) % 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"threads: {torch.get_num_threads()}")
    print("| k | orderings | quadratic (s) | dcg (s) |")
    print("|---|---|---|---|")
    for k in range(4, MAX_ENUMERATED_ITEMS + 1):
        times = []
        for objective in ("quadratic", "dcg"):
            best = math.inf
            for _ in range(args.repeats):
                started = time.perf_counter()
                grad = exact_gradient(problem(k, objective))
                best = min(best, time.perf_counter() - started)
            assert grad is not None and torch.isfinite(grad["logits"]).all()
            times.append(best)
        print(f"| {k} | {math.factorial(k):,} | {times[0]:.3g} | {times[1]:.3g} |")


if __name__ == "__main__":
    main()
