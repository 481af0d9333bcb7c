"""Exact (every merge order) vs REINFORCE reference for ListOps' merge decisions.

    python tests/benchmarks/listops_references.py [--dim 32] [--samples 100000] [--seed 0]

On the measurement batch of the listops task (the first 8 official validation
sentences of at most 7 tokens) at a fresh initialisation, prints for each parameter
group the norm of the exact gradient, the distance of the REINFORCE-LOO reference
(log p(tree) = Σ log p(merges)) from it, and that reference's standard error: they
agree when the distance is within a few standard errors.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradbench.noise import derive_seed
from gradbench.references import exact_gradient, reinforce_reference
from gradbench.families.sequence import count_sequences
from gradbench.tasks.listops import data
from gradbench.tasks.listops.model import init_weights, merge_mask
from gradbench.tasks.listops.problem import ListOpsProblem
from gradbench.tasks.listops.training import measurement_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    batch = measurement_batch(data.read_tsv(data.official_validation_path()), 8, 7, "cpu")
    weights = init_weights(args.dim, torch.Generator().manual_seed(derive_seed(args.seed, "init")), torch.float64)
    problem = ListOpsProblem(weights, batch)
    orders = count_sequences(merge_mask(batch.lengths))
    print(f"{len(batch)} sentences of {batch.lengths.tolist()} tokens: {sum(orders)} merge orders in all")
    started = time.perf_counter()
    exact = exact_gradient(problem)
    print(f"exact: {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    mc = reinforce_reference(problem, args.samples, args.seed)
    print(f"REINFORCE-LOO over {mc.samples:,} trees: {time.perf_counter() - started:.1f} s")
    print("| group | ‖exact‖ | ‖reinforce − exact‖ | reinforce stderr | distance / stderr |")
    print("|---|---|---|---|---|")
    for group, g in exact.items():
        gap = float((mc.gradient[group] - g).norm())
        print(f"| {group} | {float(g.norm()):.4g} | {gap:.3g} | {mc.stderr(group):.3g} | {gap / mc.stderr(group):.2f} |")


if __name__ == "__main__":
    main()
