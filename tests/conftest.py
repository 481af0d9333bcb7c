"""Shared helpers. Statistical tests follow one policy: a fixed seed, a tolerance in
standard errors, and the false-alarm rate that tolerance implies for a correct
implementation under the Gaussian approximation (stated next to each test).

The test device: ``pytest --device cuda`` (or ``GRADBENCH_TEST_DEVICE=cuda``) builds every
problem of ``problem_of``/``measure_spec`` and of the ``device`` fixture on CUDA, and skips
the tests marked ``cpu_only`` (bit-for-bit identity is promised on CPU only; docs/gpu.md).
With the default ``cpu``, CUDA is hidden from the suite, so ``--device auto`` in CLI tests
means the CPU on a GPU machine too.
"""

from __future__ import annotations

import os

import pytest
import torch

from gradbench.registry import estimators, tasks
from gradbench.engine import MeasureConfig, View, measure
from gradbench.references import resolve_reference

CPU = torch.device("cpu")
DEVICE = CPU  # the test device, set by pytest_configure from --device / GRADBENCH_TEST_DEVICE
_OWN_OPTION = True  # False when another plugin already defines --device


def pytest_addoption(parser):
    try:
        parser.addoption("--device", default=None, choices=("cpu", "cuda"),
                         help="device of the device-aware tests (default: $GRADBENCH_TEST_DEVICE or cpu)")
    except ValueError:  # another plugin owns --device: GRADBENCH_TEST_DEVICE still works
        global _OWN_OPTION
        _OWN_OPTION = False


def pytest_configure(config):
    global DEVICE
    name = (_OWN_OPTION and config.getoption("--device")) or os.environ.get("GRADBENCH_TEST_DEVICE", "cpu")
    if name not in ("cpu", "cuda"):
        raise pytest.UsageError(f"unknown test device {name!r}; choose cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if name == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # "auto" in CLI tests resolves to the CPU
    DEVICE = torch.device(name)
    config.addinivalue_line("markers", "cpu_only(reason): needs the CPU (bit-for-bit identity, CPU baselines); "
                                       "skipped with --device cuda")


def pytest_collection_modifyitems(config, items):
    if DEVICE.type == "cpu":
        return
    for item in items:
        marker = item.get_closest_marker("cpu_only")
        if marker is not None:
            why = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "CPU only")
            item.add_marker(pytest.mark.skip(reason=f"cpu_only: {why}"))


def pytest_report_header(config):
    return f"gradbench test device: {DEVICE}"

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


def problem_of(spec: str, dtype=torch.float64, device: torch.device | None = None):
    """The task's problem on ``device`` (default: the test device)."""
    return tasks.build(spec).problem(DEVICE if device is None else device, dtype)


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


@pytest.fixture
def device():
    """The test device (cpu, or cuda with ``--device cuda``)."""
    return DEVICE
