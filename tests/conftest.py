"""Shared helpers. Statistical tests follow one policy: a fixed seed, a tolerance in
standard errors, and the false-alarm rate that tolerance implies for a correct
implementation under the Gaussian approximation (stated next to each test)."""

from __future__ import annotations

import pytest
import torch

from gradbench.registry import estimators, tasks
from gradbench.engine import MeasureConfig, View, measure
from gradbench.references import resolve_reference

CPU = torch.device("cpu")

# Bias within 4 noise floors: P(false alarm) ≤ P(χ²₁ > 16) = 6.3e-5 (Székely–Bakirov bound).
BIAS_FLOORS = 4.0
# Deterministic estimates (IndeCateR on one variable, MuProp on a linear f) have a zero noise
# floor; they still differ from the reference by float64 rounding, allowed relative to ‖g*‖.
ROUNDING = 1e-9


def bias_ok(summary, floors: float = BIAS_FLOORS) -> bool:
    """bias_norm within ``floors`` noise floors (plus rounding for zero-variance estimators)."""
    m = summary.metrics
    return m["bias_norm"].value <= floors * m["bias_noise_floor"].value + ROUNDING * max(1.0, m["reference_norm"].value)


def is_unbiased(spec: str) -> bool:
    """The estimator's declared unbiasedness for this configuration (FromParam("normalize", negate=True) resolved)."""
    from gradbench.spec import parse_spec

    parsed = estimators.validate(parse_spec(spec))
    return bool(estimators.info(parsed.name).capability("unbiased", parsed.kwargs))


def problem_of(spec: str, dtype=torch.float64):
    return tasks.build(spec).problem(CPU, dtype)


def measure_spec(task_spec: str, estimator_spec: str, samples: int = 20_000, seed: int = 0, **config):
    """Measure one estimator against the exact reference; returns (measurement, reference)."""
    estimator = estimators.build(estimator_spec)
    problem = problem_of(task_spec).for_estimator(estimator)  # VIMCO: the m-sample bound
    reference = resolve_reference(problem, "exact", 0, seed)
    result = measure(problem, estimator, reference.gradient, MeasureConfig(samples, seed, **config),
                     reference.variance)
    return result, reference


@pytest.fixture
def cpu():
    return CPU
