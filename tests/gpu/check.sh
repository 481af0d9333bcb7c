#!/usr/bin/env bash
# The CUDA check: install, test suite on CUDA, the headline run, the speed benchmarks. See docs/gpu.md.
#
#   bash tests/gpu/check.sh [OUTDIR]                 on a CUDA machine (OUTDIR: default $OUT, else gpu-check-<time>)
#   bash tests/gpu/check.sh --cpu-dry-run OUTDIR     the same steps on the CPU at reduced sizes (to time and debug it)
#
# Runs from the repository root. Assumes NO internet: it uses the torch already installed
# (python3, or $GRADBENCH_PYTHON) when that torch sees CUDA, installs gradbench from this
# checkout with pip --no-index --no-deps --no-build-isolation, and only if torch lacks CUDA
# or a dependency is missing tries pip from the network, with a short timeout.
# Every step has its own timeout and all of them share one budget (CHECK_BUDGET_S, default
# 450 s), so one hang cannot eat the device time. Writes to OUTDIR (at most 8 files, as the
# device tool brings back): summary.md, timings.tsv, nvidia-smi.txt, pytest.log, headline.log,
# check.log and bundle.tar.gz (everything: logs, Parquet, JSON figures, junit XML).
set -u
cd "$(dirname "$0")/../.."

MODE=gpu
if [ "${1:-}" = "--cpu-dry-run" ]; then MODE=cpu; shift; fi
OUTDIR="${1:-${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%S)}}"
mkdir -p "$OUTDIR" && OUTDIR="$(cd "$OUTDIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gradbench-gpu-check.XXXXXX")"
BUDGET="${CHECK_BUDGET_S:-450}"
START=$(date +%s)
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
LOG="$WORK/check.log"
TIMINGS="$WORK/timings.tsv"
printf 'step\tstatus\tseconds\tlimit_s\n' >"$TIMINGS"

say() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# step NAME LIMIT CMD...: run CMD with a timeout of min(LIMIT, budget left - 15 s); log to NAME.log.
# SIGINT first (pytest then still prints its summary and writes its XML), SIGKILL 10 s later.
step() {
    local name="$1" limit="$2"; shift 2
    local left=$(( BUDGET - ($(date +%s) - START) - 15 ))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        say "SKIP $name: the budget (${BUDGET}s) is spent"
        printf '%s\tskipped (budget)\t0\t0\n' "$name" >>"$TIMINGS"
        return 0
    fi
    say "START $name (limit ${limit}s): $*"
    local t0 rc status
    t0=$(date +%s.%N)
    timeout -s INT -k 10 "$limit" "$@" >"$WORK/$name.log" 2>&1
    rc=$?
    local secs
    secs=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')" 2>/dev/null || echo "?")
    case $rc in 0) status=ok ;; 124|137) status="timed out" ;; *) status="failed (rc $rc)" ;; esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$limit" >>"$TIMINGS"
    say "END $name: $status in ${secs}s"
    tail -n 5 "$WORK/$name.log" | sed 's/^/    /' | tee -a "$LOG"
    return $rc
}

finish() {
    say "total $(( $(date +%s) - START ))s; writing $OUTDIR"
    "$PY" tests/gpu/summarize.py "$WORK" "$MODE" >"$WORK/summary.md" 2>>"$LOG" \
        || echo "summary failed; see check.log" >"$WORK/summary.md"
    cp "$WORK/summary.md" "$TIMINGS" "$LOG" "$OUTDIR/" 2>/dev/null
    [ -f "$WORK/nvidia-smi.txt" ] && cp "$WORK/nvidia-smi.txt" "$OUTDIR/"
    [ -f "$WORK/tests.log" ] && cp "$WORK/tests.log" "$OUTDIR/pytest.log"
    [ -f "$WORK/headline.log" ] && cp "$WORK/headline.log" "$OUTDIR/headline.log"
    tar -czf "$OUTDIR/bundle.tar.gz" -C "$WORK" . 2>/dev/null
    cat "$WORK/summary.md"
}

# --- 0. the machine ---------------------------------------------------------------------
PY="${GRADBENCH_PYTHON:-python3}"
[ "$MODE" = cpu ] && PY="${GRADBENCH_PYTHON:-python}"
say "mode $MODE, python $PY, work folder $WORK, output $OUTDIR, budget ${BUDGET}s"
{ date -u; uname -a; nproc; nvidia-smi 2>&1; nvidia-smi -q 2>&1 | head -80; } >"$WORK/nvidia-smi.txt"

# --- 1. torch with CUDA, then gradbench from this checkout ---------------------------------
probe_cuda() { "$PY" -c 'import torch, sys; print(torch.__version__, torch.version.cuda, torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 1)'; }
if [ "$MODE" = gpu ]; then
    if ! probe_cuda >>"$LOG" 2>&1; then
        say "torch here sees no CUDA; trying pip (network, 180 s) for a CUDA torch build"
        timeout 180 "$PY" -m pip install -q torch >>"$LOG" 2>&1
        if ! probe_cuda >>"$LOG" 2>&1; then
            say "FAILED: no torch with CUDA (set GRADBENCH_PYTHON to a python whose torch sees the GPU)"
            printf 'setup\tfailed (no CUDA torch)\t0\t0\n' >>"$TIMINGS"; finish; exit 1
        fi
    fi
    DEVICE=cuda
else
    DEVICE=cpu
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' | tee -a "$LOG"

install() {
    # Offline first: the checkout, editable, with the torch and libraries already there; where that
    # environment is not writable, a plain install into a folder of the work dir on PYTHONPATH.
    if timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .; then
        :
    elif timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$WORK/site" .; then
        export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    else  # e.g. no setuptools/wheel in that environment to build with
        echo "the offline install failed; trying pip from the network (120 s)"
        timeout 120 "$PY" -m pip install -q -e ".[test]" || return 1
    fi
    if ! "$PY" -c 'import gradbench.cli, numpy, scipy, pandas, pyarrow, matplotlib, seaborn, typer, rich, pytest'; then
        echo "a dependency is missing; trying pip from the network (120 s)"
        timeout 120 "$PY" -m pip install -q -e ".[test]" || return 1
    fi
    "$PY" -c 'import gradbench, torch; print("gradbench", gradbench.__version__, "from", gradbench.__file__)'
}
if [ "$MODE" = cpu ] && "$PY" -c 'import gradbench' 2>/dev/null; then
    say "gradbench already installed in $PY: not reinstalling (dry run)"
else
    # A shell function (it may export PYTHONPATH), so not through step(); its pip calls have timeouts.
    say "START setup"
    t0=$(date +%s)
    install >"$WORK/setup.log" 2>&1; rc=$?
    printf 'setup\t%s\t%s\t%s\n' "$([ $rc = 0 ] && echo ok || echo "failed (rc $rc)")" "$(( $(date +%s) - t0 ))" 360 >>"$TIMINGS"
    tail -n 5 "$WORK/setup.log" | sed 's/^/    /' | tee -a "$LOG"
    [ $rc = 0 ] || { say "FAILED: could not install gradbench (setup.log)"; finish; exit 1; }
fi
GB=("$PY" -m gradbench)

# Sizes: full on the GPU; reduced on the CPU dry run (same steps, same code paths).
if [ "$MODE" = gpu ]; then
    HEADLINE_TASK="mnist-vae"; HEADLINE_LIMIT=200
    VAE_SAMPLES=(100 1000); RUNNER=(--samples 1000000 --loop-samples 2000)
    DET_SAMPLES=20000
    TESTS=(tests); XDIST=(); "$PY" -c 'import xdist' 2>/dev/null && XDIST=(-n 8)
else
    HEADLINE_TASK="mnist-vae(epochs=2, measure_every=1, iwae_every=2, measure_images=100, iwae_samples=10)"
    HEADLINE_LIMIT=200
    VAE_SAMPLES=(8); RUNNER=(--samples 20000 --loop-samples 200 --memory-samples 10000)
    DET_SAMPLES=2000
    TESTS=(tests/test_device_lint.py tests/test_runner.py tests/test_closed_forms.py); XDIST=()
fi
PER_TEST=(); "$PY" -c 'import pytest_timeout' 2>/dev/null && PER_TEST=(--timeout 120)

# --- 2. the headline run ---------------------------------------------------------------
step headline "$HEADLINE_LIMIT" "${GB[@]}" run --estimator gst --task "$HEADLINE_TASK" --device "$DEVICE" \
    --out "$WORK/headline"

# --- 3. benchmarks ---------------------------------------------------------------------
step vae_speed_B1000 150 "$PY" tests/benchmarks/vae_measure_speed.py --device "$DEVICE" --images 1000 \
    --samples "${VAE_SAMPLES[@]}" --json "$WORK/vae_speed_B1000.json"
step vae_speed_B100 100 "$PY" tests/benchmarks/vae_measure_speed.py --device "$DEVICE" --images 100 \
    --samples "${VAE_SAMPLES[@]}" --json "$WORK/vae_speed_B100.json"
step runner_speed 75 "$PY" tests/benchmarks/runner_speed.py --device "$DEVICE" "${RUNNER[@]}" \
    --json "$WORK/runner_speed.json"

# --- 4. reproducibility: the same run twice on the device, and once on the CPU -------------------
DET=(run --task toy-quadratic -e reinforce -e rloo -e gst -e stgs -e "gr-mc(k=10)" -e rebar --samples "$DET_SAMPLES"
     --seed 3 --warmup 100)
step same_seed_1 45 "${GB[@]}" "${DET[@]}" --device "$DEVICE" --out "$WORK/determinism/device1"
step same_seed_2 45 "${GB[@]}" "${DET[@]}" --device "$DEVICE" --out "$WORK/determinism/device2"
step same_seed_cpu 45 "${GB[@]}" "${DET[@]}" --device cpu --out "$WORK/determinism/cpu"
step compare_same_device 30 "$PY" tests/gpu/compare_runs.py "$WORK/determinism/device1" "$WORK/determinism/device2" \
    --label "$DEVICE run vs $DEVICE run, same seed" --json "$WORK/compare_same_device.json"
step compare_cpu_device 30 "$PY" tests/gpu/compare_runs.py "$WORK/determinism/cpu" "$WORK/determinism/device1" \
    --label "cpu run vs $DEVICE run, same seed" --json "$WORK/compare_cpu_device.json"

# --- 5. the test suite on the device (last: it takes what the budget leaves) ----------------------
# The device by environment (not --device), in case a plugin installed there owns that option name.
export GRADBENCH_TEST_DEVICE="$DEVICE"
step tests 300 "$PY" -m pytest -q -p no:cacheprovider "${XDIST[@]}" "${PER_TEST[@]}" -rfEs \
    --durations=15 --junitxml="$WORK/junit.xml" "${TESTS[@]}"

finish
