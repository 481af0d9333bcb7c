#!/usr/bin/env bash
# Gradient-variance regression check for your own gradbench estimator, in your repository's CI.
# Copy this file into your repository (e.g. as ci/variance-check.sh); docs/ci.md explains it.
#
#   bash ci/variance-check.sh            install, measure, compare with the committed baseline:
#                                        exit 1 when a metric regressed, 2 on unusable input
#   bash ci/variance-check.sh --update   measure and (re)write the baseline; commit the folder
#
# Settings (environment variables; the defaults in brackets):
#   GRADBENCH_ESTIMATORS  estimator specs to measure, separated by ";", e.g. "my-est;my-est(k=8)"
#   GRADBENCH_TASKS       task specs, separated by ";" [toy-quadratic]
#   GRADBENCH_SAMPLES     estimates per estimator and task [100000]
#   GRADBENCH_BASELINE    the baseline folder, committed in your repository [gradbench-baseline]
#   GRADBENCH_JUNIT       also write a JUnit XML report to this file (one test per compared metric)
#   GRADBENCH_INSTALL     "yes": install first (CPU torch, gradbench, this repository) ["yes"];
#                         "no" when the environment already has them (the GitHub workflow installs
#                         in its own step)
#   GRADBENCH_SOURCE      what to pip-install gradbench from: a git URL or a path to its source.
#                         Not the bare name "gradbench": on PyPI that is another project.
# In GitHub Actions (GITHUB_ACTIONS=true) each regression also becomes an annotation on the run, and the
# comparison table goes to the job summary. The exit code is gradbench compare's.
set -euo pipefail

estimators="${GRADBENCH_ESTIMATORS:?set GRADBENCH_ESTIMATORS to your estimator spec(s), e.g. my-estimator}"
tasks="${GRADBENCH_TASKS:-toy-quadratic}"
samples="${GRADBENCH_SAMPLES:-100000}"
baseline="${GRADBENCH_BASELINE:-gradbench-baseline}"

if [ "${GRADBENCH_INSTALL:-yes}" = yes ]; then
    : "${GRADBENCH_SOURCE:?set GRADBENCH_SOURCE to the git URL or source path of gradbench}"
    python3.11 -m venv .gradbench-venv && . .gradbench-venv/bin/activate
    # The CPU build of torch: a few hundred MB, where the default wheel on Linux is a multi-GB CUDA build.
    pip install -q torch --index-url https://download.pytorch.org/whl/cpu
    pip install -q "$GRADBENCH_SOURCE"
    pip install -q -e .  # your package: its entry point registers your estimator
fi

# One run per task; every option fixed, so the same code on the same machine type gives the same numbers.
measure() {
    local out="$1" task
    local -a specs=()
    IFS=';' read -ra list <<< "$estimators"
    for spec in "${list[@]}"; do specs+=(--estimator "$spec"); done
    IFS=';' read -ra task_list <<< "$tasks"
    for task in "${task_list[@]}"; do
        gradbench run --task "$task" "${specs[@]}" --samples "$samples" --seed 0 --device cpu --out "$out" \
            > /dev/null
    done
}

if [ "${1:-}" = --update ]; then
    fresh="$(mktemp -d)"
    measure "$fresh/runs"
    rm -rf "$baseline"
    mv "$fresh/runs" "$baseline"
    echo "baseline written to $baseline: commit it (git add $baseline)"
    exit 0
fi

current="$(mktemp -d)/runs"
measure "$current"
# In GitHub Actions: an annotation per regression, the table in the log and in the job summary.
format=table
if [ "${GITHUB_ACTIONS:-}" = true ]; then format=github; fi
gradbench compare "$baseline" "$current" --format "$format" ${GRADBENCH_JUNIT:+--junit "$GRADBENCH_JUNIT"}
