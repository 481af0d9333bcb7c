"""ARM and DisARM against an independent implementation of the papers' formulas and against quadrature.

The independent versions below are written from the papers in NumPy, in their own
notation (ARM: 1[u > σ(−φ)] and 1[u < σ(φ)]; DisARM: case by case), and compared
draw by draw with the registered estimators on the same uniforms. Expectations are
checked by deterministic midpoint quadrature over u, not sampling.
"""

import numpy as np
import pytest
import torch

from conftest import measure_spec, problem_of
from gradbench.noise import NoiseSource
from gradbench.registry import estimators
from gradbench.engine import View, per_draw_gradients

TASK = "toy-bernoulli(logits=[-1.0, 0.5, 2.0], target=0.3)"


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _f(b, t=0.3):
    return ((b - t) ** 2).sum(-1)


def arm_numpy(phi, u):
    """Yin & Zhou (2019), eq. (5): (f(1[u > σ(−φ)]) − f(1[u < σ(φ)]))·(u − ½)."""
    return (_f((u > _sigmoid(-phi)).astype(float)) - _f((u < _sigmoid(phi)).astype(float)))[:, None] * (u - 0.5)


def disarm_numpy(phi, u):
    """Dong, Mnih & Tucker (2020), eq. (6), variable by variable."""
    b, b_tilde = (u < _sigmoid(phi)).astype(float), (1 - u < _sigmoid(phi)).astype(float)
    out = np.zeros_like(u)
    for s in range(u.shape[0]):
        for d in range(u.shape[1]):
            if b[s, d] != b_tilde[s, d]:
                out[s, d] = 0.5 * (_f(b[s]) - _f(b_tilde[s])) * (-1) ** b_tilde[s, d] * _sigmoid(abs(phi[d]))
    return out


@pytest.mark.parametrize("name, reference", [("arm", arm_numpy), ("disarm", disarm_numpy)])
def test_matches_an_independent_implementation_draw_by_draw(name, reference):
    problem = problem_of(TASK)
    estimator = estimators.build(name)
    view = View(problem, estimator)
    noise = NoiseSource(3, "test", view.template.params.device).draw_all(estimator.noise(view.template), 0, 500)
    ours = per_draw_gradients(view, estimator, None, noise)["logits"].numpy()
    theirs = reference(problem.logits.numpy(), noise["sample"].numpy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["arm", "disarm"])
@pytest.mark.parametrize("logit", [-1.3, 0.0, 0.7])
def test_expectation_over_u_is_the_exact_gradient(name, logit):
    """Midpoint quadrature on 200,000 points of u ∈ (0, 1), one variable: error O(1/N) at the two jumps."""
    problem = problem_of(f"toy-bernoulli(dim=1, logits=[{logit}], target=0.2)")
    estimator = estimators.build(name)
    n = 200_000
    u = ((torch.arange(n, dtype=torch.float64, device=problem.logits.device) + 0.5) / n).reshape(n, 1)
    mean = per_draw_gradients(View(problem, estimator), estimator, None, {"sample": u})["logits"].mean(0)
    exact = problem.exact_gradient()["logits"]
    torch.testing.assert_close(mean, exact, rtol=0, atol=2e-5)


def test_disarm_has_less_variance_than_arm():
    """Rao-Blackwellisation: Var(DisARM) ≤ Var(ARM). Measured here at 30% less, the 95% intervals disjoint."""
    arm, _ = measure_spec(TASK, "arm", samples=100_000, seed=6)
    disarm, _ = measure_spec(TASK, "disarm", samples=100_000, seed=6)
    assert disarm.groups["logits"].metrics["variance"].ci_high < arm.groups["logits"].metrics["variance"].ci_low
