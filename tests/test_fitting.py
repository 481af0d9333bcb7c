"""The generic trainer of fixed tasks (gradbench.fitting) and the poly task.

Deterministic checks only (no statistics): the poly task's exact gradient against
full enumeration, stacked seeds bit-identical to separate runs, and training that
reduces the exact E f with an unbiased estimator on poly and toy-quadratic.
"""

import torch

from conftest import problem_of
from gradbench.fitting import FitConfig, final_losses, fit
from gradbench.references import enumerate_gradient
from gradbench.registry import estimators


def test_poly_exact_gradient_matches_enumeration():
    problem = problem_of("poly(dim=6, p=1.5, init=1.0, seed=3)")
    closed = problem.exact_gradient()["logits"].reshape(-1)
    torch.testing.assert_close(closed, enumerate_gradient(problem)["logits"], rtol=1e-12, atol=1e-15)


def test_poly_seeds_give_different_starts_in_range():
    a, b = (problem_of(f"poly(seed={s})").parameters()["logits"] for s in (0, 1))
    assert a.shape == (128, 2) and not torch.equal(a, b) and a.abs().max() <= 0.01


def test_stacked_seeds_equal_separate_runs():
    config = FitConfig(steps=30, batch=8, lr=0.05, log_every=10)
    problems = [problem_of(f"poly(dim=16, seed={s})") for s in range(3)]
    together = fit(problems, estimators.build("reinmax"), config, [0, 1, 2])
    alone = [row for s in range(3) for row in fit([problems[s]], estimators.build("reinmax"), config, [s])]
    key = lambda r: (r["seed"], r["step"])  # noqa: E731
    assert sorted(together, key=key) == sorted(alone, key=key)


def test_training_lowers_the_exact_loss():
    config = FitConfig(steps=200, batch=16, lr=0.05, log_every=200)
    problems = [problem_of(f"poly(dim=16, p=2.0, seed={s})") for s in range(2)]
    rows = fit(problems, estimators.build("rloo"), config, [0, 1])
    start = {r["seed"]: r["expected_loss"] for r in rows if r["step"] == 0}
    for seed, final in final_losses(rows).items():
        assert final < start[seed] - 0.01  # the start is ≈ 0.2525, the optimum 0.2025


def test_any_fixed_task_trains_stateful_estimators_too():
    """toy-quadratic (no exact expectation offered: batch loss only) with a stateful estimator, one seed at a time."""
    config = FitConfig(steps=20, batch=4, lr=0.1, log_every=10)
    rows = fit([problem_of("toy-quadratic")] * 2, estimators.build("reinforce-ema"), config, [0, 1])
    assert [r["step"] for r in rows] == [0, 10, 20, 0, 10, 20]
    assert all(r["batch_loss"] == r["batch_loss"] for r in rows)  # finite, not nan


def test_on_step_sees_every_gradient_and_its_parameters():
    seen = []
    config = FitConfig(steps=5, batch=2, lr=0.1, log_every=5)
    problems = [problem_of(f"poly(dim=4, seed={s})") for s in range(2)]
    fit(problems, estimators.build("st"), config, [0, 1], lambda step, g, p: seen.append((step, g, p)))
    assert [s for s, _, _ in seen] == list(range(5))
    assert seen[0][1]["logits"].shape == (2, 4, 2) and seen[0][2]["logits"].shape == (2, 4, 2)
    assert not torch.equal(seen[0][2]["logits"], seen[-1][2]["logits"])  # the parameters moved
