"""Shared helpers. Statistical tests follow one policy: a fixed seed, a tolerance in
standard errors, and the false-alarm rate that tolerance implies for a correct
implementation under the Gaussian approximation (stated next to each test)."""

from __future__ import annotations

import pytest
import torch

from gradbench.registry import estimators, tasks
from gradbench.runner import MeasureConfig, View, measure
from gradbench.references import resolve_reference

CPU = torch.device("cpu")

# Bias within 4 noise floors: P(false alarm) ≤ P(χ²₁ > 16) = 6.3e-5 (Székely–Bakirov bound).
BIAS_FLOORS = 4.0


def problem_of(spec: str, dtype=torch.float64):
    return tasks.build(spec).problem(CPU, dtype)


def measure_spec(task_spec: str, estimator_spec: str, samples: int = 20_000, seed: int = 0, **config):
    """Measure one estimator against the exact reference; returns (measurement, reference)."""
    problem = problem_of(task_spec)
    reference = resolve_reference(problem, "exact", 0, seed)
    estimator = estimators.build(estimator_spec)
    result = measure(problem, estimator, reference.gradient, MeasureConfig(samples, seed, **config),
                     reference.variance)
    return result, reference


@pytest.fixture
def cpu():
    return CPU
