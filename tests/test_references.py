"""References: exact by closed form or enumeration; REINFORCE-LOO with a standard error."""

import math

import pytest
import torch

from conftest import problem_of
from gradbench.contract import Problem
from gradbench.families.categorical import Categorical, Objective
from gradbench.errors import UserError
from gradbench.references import exact_gradient, reinforce_reference, resolve_reference


@pytest.mark.parametrize("task", ["toy-quadratic", "toy-bernoulli(logits=[0.5, -1.0, 2.0])",
                                  "toy-quadratic(logits=[1.0, 0.0, -1.0], target=[0.0, 1.0, 0.0], mask=[1, 1, 0])"])
def test_reinforce_reference_agrees_with_the_exact_one(task):
    """Within 4 standard errors of its own (trace) error: false alarm ≤ 6.3e-5."""
    problem = problem_of(task)
    exact = exact_gradient(problem)["logits"]
    mc = reinforce_reference(problem, 400_000, seed=2)
    assert mc.kind == "reinforce" and mc.samples == 400_000
    err = float((mc.gradient["logits"] - exact).norm())
    assert err <= 4 * mc.stderr("logits"), (err, mc.stderr("logits"))
    assert 0 < mc.stderr("logits") < 0.05 * float(exact.norm()) + 1e-3


def test_reference_error_shrinks_like_one_over_root_n():
    problem = problem_of("toy-quadratic")
    small = reinforce_reference(problem, 40_000, seed=1).stderr("logits")
    large = reinforce_reference(problem, 640_000, seed=1).stderr("logits")
    assert 3.0 < small / large < 5.5  # √16 = 4


class Wide(Problem):
    """30 categoricals of 10 categories: 10^30 configurations, no closed form."""

    family = "categorical"

    def __init__(self):
        self.logits = torch.zeros(30, 10, dtype=torch.float64)
        self.objective = Objective(lambda x: (x[..., 0] ** 2).sum(-1))

    def parameters(self):
        return {"logits": self.logits}

    def distribution(self, params):
        return Categorical(params["logits"])


def test_modes():
    assert resolve_reference(problem_of("toy-quadratic"), "auto", 1000, 0).kind == "exact"
    assert resolve_reference(Wide(), "auto", 2000, 0).kind == "reinforce"
    with pytest.raises(UserError, match="too large to enumerate"):
        resolve_reference(Wide(), "exact", 2000, 0)
    with pytest.raises(UserError, match="unknown reference"):
        resolve_reference(Wide(), "magic", 2000, 0)
    with pytest.raises(UserError, match="at least 40"):
        resolve_reference(Wide(), "reinforce", 10, 0)


def test_wide_problem_reference_is_right_per_variable():
    """f = Σ_v D_v0: each variable's gradient is p0(e_0 − p) = 0.1·(e_0 − 0.1)."""
    ref = resolve_reference(Wide(), "reinforce", 200_000, 0)
    expected = (0.1 * (torch.eye(10, dtype=torch.float64)[0] - 0.1)).repeat(30)
    assert float((ref.gradient["logits"] - expected).norm()) <= 4 * ref.stderr("logits")
    assert math.isfinite(ref.stderr("logits"))
