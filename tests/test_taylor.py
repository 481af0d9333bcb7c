"""MuProp and DARN: DARN's bias shows on a non-quadratic f and has the predicted value; MuProp's does not.

Policy: fixed seeds; "agrees" means within BIAS_FLOORS = 4 noise floors (false alarm
≤ 6.3e-5 per check, Székely–Bakirov bound); "biased" means beyond 4 floors, which at
the measured size of DARN's bias (about 30 floors at these sample sizes) has power ≈ 1.
"""

import math

import torch

from conftest import BIAS_FLOORS, bias_ok, measure_spec, problem_of
from gradbench.registry import estimators
from gradbench.engine import MeasureConfig, measure
from gradbench.tasks.toy import SINE_FREQUENCY

SINE = "toy-bernoulli(objective='sine', logits=[0.5, -1.0, 0.0, 1.5], target=0.3)"


def _bias_floors(summary):
    return summary.metrics["bias_norm"].value / summary.metrics["bias_noise_floor"].value


def test_darn_is_biased_on_a_non_quadratic_objective_and_muprop_is_not():
    darn, _ = measure_spec(SINE, "darn", samples=100_000, seed=2)
    muprop, _ = measure_spec(SINE, "muprop", samples=100_000, seed=2)
    assert _bias_floors(darn.groups["logits"]) > BIAS_FLOORS
    assert bias_ok(muprop.groups["logits"])


def test_darn_mean_is_the_gradient_of_the_linearised_objective():
    """E[DARN] = Σ_d ∂f/∂b_d(½)·∇σ(θ_d) = σ'(θ)·3cos(3(½ − t)): the bias is the one theory predicts."""
    problem = problem_of(SINE)
    p = torch.sigmoid(problem.logits)
    predicted = p * (1 - p) * SINE_FREQUENCY * math.cos(SINE_FREQUENCY * (0.5 - problem.target))
    result = measure(problem, estimators.build("darn"), {"logits": predicted}, MeasureConfig(100_000, seed=4))
    assert bias_ok(result.groups["logits"])


def test_darn_is_unbiased_on_quadratics():
    """Quadratic in binary variables: f(1) − f(0) = f'(½). toy-quadratic: isotropic around the uniform point."""
    for task in ("toy-bernoulli(logits=[0.5, -1.0, 0.0, 1.5], target=0.3)", "toy-quadratic"):
        result, _ = measure_spec(task, "darn", samples=100_000, seed=5)
        assert bias_ok(result.groups["logits"]), task


def test_muprop_is_exact_for_a_linear_objective():
    """toy-latent's f is linear in z: the Taylor baseline is f itself, so every estimate is the gradient."""
    result, reference = measure_spec("toy-latent", "muprop", samples=1000, seed=0)
    summary = result.groups["logits"]
    assert summary.metrics["variance"].value < 1e-12 * float(summary.mean @ summary.mean)  # rounding only
    torch.testing.assert_close(summary.mean, reference.gradient["logits"], rtol=1e-10, atol=1e-12)
