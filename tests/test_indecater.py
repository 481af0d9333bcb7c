"""IndeCateR: exact with one variable, unchanged by how its evaluations are blocked, unbiased when wide.

Policy: fixed seeds, bias within BIAS_FLOORS = 4 noise floors (false alarm ≤ 6.3e-5).
"""

import torch

from conftest import bias_ok, measure_spec, problem_of
from gradbench.estimators import indecater
from gradbench.noise import NoiseSource
from gradbench.registry import estimators
from gradbench.engine import View, per_draw_gradients


def test_one_variable_is_enumerated_exactly():
    result, reference = measure_spec("toy-quadratic", "indecater", samples=200, seed=0)
    summary = result.groups["logits"]
    assert summary.metrics["variance"].value < 1e-12 * float(summary.mean @ summary.mean)  # rounding only
    torch.testing.assert_close(summary.mean, reference.gradient["logits"], rtol=1e-12, atol=1e-15)


def test_blocking_the_evaluations_changes_nothing(monkeypatch):
    problem = problem_of("toy-bernoulli(logits=[-1.0, 0.5, 2.0, 0.0, 0.3], target=0.3, objective='sine')")
    estimator = estimators.build("indecater")
    view = View(problem, estimator)
    noise = NoiseSource(0, "test", problem.logits.device).draw_all(estimator.noise(view.template), 0, 40)
    whole = per_draw_gradients(view, estimator, None, noise)["logits"]
    monkeypatch.setattr(indecater, "_BLOCK_VALUES", 1)  # one variable per call of f
    torch.testing.assert_close(per_draw_gradients(view, estimator, None, noise)["logits"], whole, rtol=0, atol=0)


def test_evaluations_count_categories_times_variables():
    view = View(problem_of("toy-bernoulli(dim=7)"), estimators.build("indecater"))
    assert estimators.build("indecater").n_evaluations(view.template) == 2 * 7 + 1


def test_unbiased_on_the_200_variable_bernoulli_toy():
    """D = 200 (the binary VAE's latent size) seen through the two-category view: 401 evaluations per estimate."""
    result, _ = measure_spec("toy-bernoulli(dim=200, logits=[0.4], objective='sine')", "indecater", samples=500, seed=1)
    assert bias_ok(result.groups["logits"])
