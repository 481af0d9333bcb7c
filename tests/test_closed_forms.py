"""Closed forms: constant f has gradient 0, linear f the analytic softmax Jacobian.

Tolerance: BIAS_FLOORS = 4 noise floors (false alarm ≤ 6.3e-5 per case); seeds fixed.
"""

import pytest
import torch

from conftest import CPU, bias_ok, is_unbiased
from gradbench.contract import Problem
from gradbench.families.categorical import Categorical, Objective
from gradbench.references import enumerate_gradient
from gradbench.registry import compatibility, estimators, tasks
from gradbench.engine import MeasureConfig, measure

LOGITS = torch.tensor([0.4, -1.0, 0.0, 1.3, 0.2], dtype=torch.float64)
# Unbiased estimators that can run on one plain categorical (ARM/DisARM need Bernoulli
# variables, VIMCO a task with importance weights).
UNBIASED = [n for n in estimators.names()
            if is_unbiased(n) and compatibility(estimators.info(n), tasks.info("toy-quadratic"))[0]]


class FunctionProblem(Problem):
    """One categorical with logits ``LOGITS`` and a given f."""

    family = "categorical"

    def __init__(self, fn):
        self.objective = Objective(fn)

    def parameters(self):
        return {"logits": LOGITS}

    def distribution(self, params):
        return Categorical(params["logits"])


def _check(problem, expected, est_name):
    result = measure(problem, estimators.build(est_name), {"logits": expected},
                     MeasureConfig(100_000, seed=5, warmup=200))
    summary = result.groups["logits"]
    assert bias_ok(summary)
    return summary


@pytest.mark.parametrize("est_name", UNBIASED)
def test_constant_objective_has_zero_gradient(est_name):
    problem = FunctionProblem(lambda x: torch.full(x.shape[:1], 3.0, dtype=x.dtype))
    assert torch.equal(enumerate_gradient(problem)["logits"], torch.zeros(5, dtype=torch.float64))
    summary = _check(problem, torch.zeros(5, dtype=torch.float64), est_name)
    if est_name == "rloo":  # the leave-one-out baseline cancels a constant exactly
        assert summary.metrics["variance"].value == 0.0


@pytest.mark.parametrize("est_name", UNBIASED)
def test_linear_objective_gives_the_softmax_jacobian(est_name):
    a = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)
    p = torch.softmax(LOGITS, 0)
    analytic = p * (a - (a * p).sum())  # ∂/∂θ Σ_k a_k softmax(θ)_k
    problem = FunctionProblem(lambda x: x @ a)
    torch.testing.assert_close(enumerate_gradient(problem)["logits"], analytic, rtol=1e-12, atol=1e-14)
    _check(problem, analytic, est_name)


def test_enumeration_matches_the_bernoulli_closed_form():
    from conftest import problem_of

    problem = problem_of("toy-bernoulli(logits=[-1.0, 0.3, 2.0, 0.0], target=0.2)")
    torch.testing.assert_close(enumerate_gradient(problem)["logits"],
                               problem.exact_gradient()["logits"], rtol=1e-12, atol=1e-15)
    sig = torch.sigmoid(problem.logits)
    torch.testing.assert_close(problem.exact_gradient()["logits"], sig * (1 - sig) * (1 - 2 * 0.2))


def test_enumeration_matches_the_quadratic_closed_form():
    from conftest import problem_of

    problem = problem_of("toy-quadratic")
    p, t = torch.softmax(problem.logits, 0), problem.target
    # f(D) = 1 − 2 t_D + ‖t‖² on one-hot D, so the gradient is that of −2⟨t, p⟩.
    torch.testing.assert_close(enumerate_gradient(problem)["logits"], -2 * p * (t - (t * p).sum()))


def test_masked_categories_get_zero_gradient_and_probability():
    from conftest import problem_of

    problem = problem_of("toy-quadratic(logits=[0.0, 1.0, 2.0], target=[0.3, 0.3, 0.4], mask=[1, 0, 1])")
    exact = enumerate_gradient(problem)["logits"]
    assert exact[1] == 0
    result = measure(problem, estimators.build("reinforce"), {"logits": exact}, MeasureConfig(10_000, seed=1))
    assert result.groups["logits"].mean[1] == 0


def test_reinforce_variance_matches_its_exact_value():
    """Var = Σ_k p_k ‖f(k)(e_k − p)‖² − ‖g‖², by enumeration; measured with 200,000 estimates.

    The measured value must lie within its own 95% interval of the exact one, and within 2%.
    """
    from conftest import measure_spec, problem_of

    problem = problem_of("toy-quadratic")
    p = torch.softmax(problem.logits, 0)
    eye = torch.eye(10, dtype=torch.float64, device=problem.target.device)
    f = ((eye - problem.target) ** 2).sum(1)
    per_outcome = f[:, None] * (eye - p)  # the estimate when D = e_k
    exact_var = float((p * (per_outcome**2).sum(1)).sum() - ((p[:, None] * per_outcome).sum(0) ** 2).sum())
    result, _ = measure_spec("toy-quadratic", "reinforce", samples=200_000, seed=21)
    v = result.groups["logits"].metrics["variance"]
    assert v.ci_low <= exact_var <= v.ci_high, (v, exact_var)
    assert abs(v.value / exact_var - 1) < 0.02
