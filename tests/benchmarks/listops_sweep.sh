#!/usr/bin/env bash
# The ListOps must-show sweep: STGS, GR-MC100 and GST-1.0 at τ ∈ {1.0, 0.1}, seeds 0-2, with the
# CPU preset, two processes at a time (one thread each). Then summarise with listops_table.py:
#   bash tests/benchmarks/listops_sweep.sh /work/results-listops
#   python tests/benchmarks/listops_table.py /work/results-listops
set -euo pipefail
out=${1:-results/listops}
samples=${SAMPLES:-2000}
mkdir -p "$out"
jobs=()
for seed in 0 1 2; do
  for tau in 1.0 0.1; do
    jobs+=("$seed $tau")
  done
done
run() {
  local seed=$1 tau=$2
  OMP_NUM_THREADS=1 gradbench run --task listops --seed "$seed" --samples "$samples" --out "$out" \
    -e "stgs(tau=$tau)" -e "gr-mc(k=100, tau=$tau)" -e "gst(tau=$tau)" > "$out/_log-seed$seed-tau$tau.txt" 2>&1
}
for job in "${jobs[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do sleep 5; done
  run $job &
done
wait
