#!/usr/bin/env bash
# The mnist-vae comparison of the GST paper's estimators on the embedded subset:
# STGS, GR-MC (k = 100), GST-1.0 and GST-1.2 at tau = 1.0 and 0.5, seeds 0..2,
# one `gradbench run` each, at most $JOBS at a time, one torch thread each.
#
#     tests/benchmarks/vae_sweep.sh [OUT] [TASK_ARGS]
#     python tests/benchmarks/vae_table.py OUT        # the table, from the Parquet results
#
# OUT defaults to results-vae; TASK_ARGS to the settings used for the README's table.
set -euo pipefail
OUT=${1:-results-vae}
TASK_ARGS=${2:-"epochs=50, measure_every=20, iwae_every=50"}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-"0 1 2"}
mkdir -p "$OUT/_logs"  # "_" keeps pyarrow from reading the logs as results
for seed in $SEEDS; do
  for tau in 1.0 0.5; do
    for est in "stgs(tau=$tau)" "gr-mc(k=100, tau=$tau)" "gst(gap=1.0, tau=$tau)" "gst(gap=1.2, tau=$tau)"; do
      printf '%s\t%s\n' "$seed" "$est"
    done
  done
done | OMP_NUM_THREADS=1 xargs -P "$JOBS" -d '\n' -I{} bash -c '
  seed=$(cut -f1 <<<"{}"); est=$(cut -f2 <<<"{}")
  log="'"$OUT"'/_logs/seed$seed-$(tr -c "a-z0-9.=\n" _ <<<"$est").txt"
  gradbench run --task "mnist-vae('"$TASK_ARGS"')" -e "$est" --seed "$seed" --out "'"$OUT"'" >"$log" 2>&1 \
    && echo "done: seed $seed $est" || echo "FAILED: seed $seed $est (see $log)"'
