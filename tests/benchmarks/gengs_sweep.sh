#!/bin/bash
# GenGS bias and variance against truncation level and τ on Poisson(λ), λ ∈ {0.5, 5, 50}
# (docs/results/gengs.md, docs/results/gengs-findings.md). Tabulate with:
#   python -m gradbench.reports.counts_table OUT
set -e
out=${1:-results/gengs}
for rate in 0.5 5.0 50.0; do
  specs=()
  for eps in 0.3 0.1 0.01 0.0001 1e-08 1e-12; do
    for tau in 2.0 1.0 0.5 0.2 0.1; do specs+=(-e "gengs(eps=$eps, tau=$tau)"); done
    specs+=(-e "gengs(eps=$eps, tau=0.5, tail='renormalize')")
  done
  for tau in 1.0 0.5 0.1; do specs+=(-e "gengs(eps=1e-12, tau=$tau, hard=True)"); done
  gradbench run --task "poisson(rate=[$rate], target=[$rate], view_eps=1e-12)" "${specs[@]}" \
    -e reinforce -e rloo -e "stgs(tau=0.5)" -e "gst(tau=0.5)" -e "gr-mc(tau=0.5)" --samples 100000 --seed 0 --out "$out"
done
# The same at full coverage with another target, f = z² (gradient 1 + 2λ).
for rate in 0.5 5.0 50.0; do
  specs=()
  for tau in 2.0 1.0 0.5 0.2 0.1; do specs+=(-e "gengs(eps=1e-12, tau=$tau)"); done
  gradbench run --task "poisson(rate=[$rate], target=[0.0])" "${specs[@]}" -e rloo --samples 100000 --seed 0 --out "$out"
done
