"""The toy tasks' exact references: per-variable closed forms against full enumeration, D = 200, spec errors.

Unbiasedness checks: fixed seeds, within BIAS_FLOORS = 4 noise floors (false alarm ≤ 6.3e-5 each).
"""

import pytest
import torch

from conftest import bias_ok, measure_spec, problem_of
from gradbench.errors import SpecError
from gradbench.references import enumerate_gradient
from gradbench.registry import tasks


@pytest.mark.parametrize("objective", ["quadratic", "sine"])
def test_per_variable_reference_matches_full_enumeration(objective):
    problem = problem_of(f"toy-bernoulli(logits=[-1.0, 0.3, 2.0, 0.0, -0.4], target=0.2, objective='{objective}')")
    torch.testing.assert_close(problem.exact_gradient()["logits"], enumerate_gradient(problem)["logits"],
                               rtol=1e-12, atol=1e-15)


def test_sine_is_not_quadratic_between_the_outcomes():
    """f(1) − f(0) ≠ f'(½) per variable: what makes a first-order Taylor expansion inexact."""
    problem = problem_of("toy-bernoulli(dim=1, objective='sine')")
    half = torch.full((1, 1), 0.5, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(problem.objective(half).sum(), half)
    ends = problem.objective(torch.tensor([[1.0], [0.0]], dtype=torch.float64))
    assert abs(float(ends[0] - ends[1]) - float(slope)) > 0.5


def test_two_hundred_variables_reference_is_per_variable():
    """∂/∂θ_d E f = σ'(θ_d)(f_d(1) − f_d(0)) for every d, with no 2^200 enumeration."""
    problem = problem_of("toy-bernoulli(dim=200, logits=[0.4], objective='sine')")
    assert enumerate_gradient(problem) is None  # too many configurations to enumerate
    p = torch.sigmoid(problem.logits)
    term = problem.term
    expected = p * (1 - p) * (term(torch.ones(200, dtype=torch.float64), problem.target)
                              - term(torch.zeros(200, dtype=torch.float64), problem.target))
    torch.testing.assert_close(problem.exact_gradient()["logits"], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("estimator", ["rloo", "disarm", "muprop"])
def test_unbiased_estimators_on_two_hundred_variables(estimator):
    result, _ = measure_spec("toy-bernoulli(dim=200, logits=[0.4], objective='sine')", estimator, samples=20_000, seed=2)
    assert bias_ok(result.groups["logits"])


def test_toy_latent_spec_errors_name_the_problem():
    with pytest.raises(SpecError, match="multiple of categories"):
        tasks.build("toy-latent(categories=3)")
    with pytest.raises(SpecError, match="log_joint has 3 values but logits has 2"):
        tasks.build("toy-latent(categories=2, logits=[0.0, 1.0], log_joint=[0.0, 1.0, 2.0])")
