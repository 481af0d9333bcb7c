"""Decision sequences (gradbench.families.sequence) on a toy chain whose every quantity can be enumerated.

The chain: T = 3 decisions per unit, 2 units with different valid options per step;
decision t's logits are θ_t + x_{t−1}·W (they depend on the previous choice), and
f = s·(Σ_t v_t·x_t − c)² per unit (a pathwise dependence on s). Checks: the per-unit
exact enumeration equals a brute-force joint one; whole-sequence REINFORCE and the
step-by-step application of REINFORCE give the same estimate draw by draw; the
REINFORCE reference and unbiased estimators agree with the exact gradient within
BIAS_FLOORS noise floors (false alarm ≤ 6.3e-5 each); both engines agree for every
compatible estimator; compatibility rules are declared, not discovered.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import pytest
import torch

from conftest import BIAS_FLOORS
from gradbench.contract import Estimator, Surrogate
from gradbench.errors import UserError
from gradbench.noise import NoiseSource, NoiseSpec
from gradbench.references import reinforce_reference, resolve_reference
from gradbench.registry import compatibility, estimators, tasks
from gradbench.engine import MeasureConfig, View, measure, per_draw_gradients
from gradbench.families.sequence import (
    CategoricalSequence, DecisionProcess, SequenceProblem, count_sequences, enumerate_sequences, seen_stepwise,
)

VALID = torch.tensor([[3, 2, 3], [2, 3, 1]])  # valid options per (unit, step), K = 3
VALUES = torch.tensor([[1.0, -0.5, 2.0], [0.3, 1.5, -1.0], [-0.7, 0.8, 0.2]], dtype=torch.float64)  # v_t [T, K]


class Chain(DecisionProcess):
    units = 1

    def __init__(self, theta, trans, scale):
        self.theta, self.trans, self.scale = theta, trans, scale  # [n, T, K], [n, K, K], [n]
        self.n, self.batch_shape = theta.shape[0], (2,)
        self.mask = torch.arange(3)[None, None, :] < VALID[:, :, None]

    def start(self, lead=()):
        prev = self.theta.new_zeros(*lead, self.n, 2, 3)
        return prev, prev.new_zeros(*lead, self.n, 2)

    def propose(self, carry, t):
        prev, total = carry
        logits = self.theta[:, t].unsqueeze(-2) + torch.matmul(prev, self.trans)
        return logits, lambda x: (x, total + (x * VALUES[t]).sum(-1))

    def finish(self, carry):
        return self.scale.reshape(self.n, 1) * (carry[1] - 0.4) ** 2


class ChainProblem(SequenceProblem):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.params = {"theta": torch.randn(3, 3, generator=g, dtype=torch.float64),
                       "trans": torch.randn(3, 3, generator=g, dtype=torch.float64),
                       "scale": torch.tensor(1.3, dtype=torch.float64)}

    def parameters(self):
        return self.params

    def distribution(self, params):
        return CategoricalSequence(Chain(params["theta"], params["trans"], params["scale"]), params["theta"])


def test_exact_enumeration_equals_brute_force_over_joint_sequences():
    problem = ChainProblem()
    assert count_sequences(problem.distribution({k: v[None] for k, v in problem.params.items()}).mask) == [18, 6]
    params = {k: v.detach()[None].clone().requires_grad_(True) for k, v in problem.params.items()}
    dist = problem.distribution(params)
    per_unit = [list(itertools.product(*[range(int(v)) for v in unit])) for unit in VALID]
    joint = torch.tensor([[a, b] for a in per_unit[0] for b in per_unit[1]])  # [108, 2, T]
    x = torch.nn.functional.one_hot(joint, 3).to(torch.float64).unsqueeze(1)  # [C, 1, 2, T, K]
    log_p = dist.log_prob(x).sum((-1, -2)).squeeze(1)
    assert float(log_p.detach().exp().sum()) == pytest.approx(1.0, abs=1e-12)  # a distribution over joint sequences
    expectation = (log_p.exp() * dist.objective(x, lead=1).sum(-1).squeeze(1)).sum()
    brute = torch.autograd.grad(expectation, list(params.values()))
    exact = enumerate_sequences(problem)
    for (name, _), g in zip(params.items(), brute):
        torch.testing.assert_close(exact[name], g.reshape(-1), rtol=1e-12, atol=1e-14)
    assert enumerate_sequences(problem, max_sequences=23) is None  # 18 + 6 sequences do not fit


def _noise(problem, estimator, n=24, stepwise=None):
    view = View(problem, estimator)
    return view, NoiseSource(5, "test", view.template.params.device).draw_all(estimator.noise(view.template), 0, n)


def test_stepwise_reinforce_equals_whole_sequence_reinforce_draw_by_draw():
    """Continuation passing turns per-decision REINFORCE into f·Σ_t ∇log p(x_t | x_<t): the same numbers."""
    problem, reinforce = ChainProblem(), estimators.build("reinforce")
    view, noise = _noise(problem, reinforce)
    grads = {}
    for stepwise in (False, True):
        params = {k: v.detach().expand(24, *v.shape).clone().requires_grad_(True) for k, v in problem.params.items()}
        out = problem.distribution(params).surrogate(reinforce, noise, None, stepwise)
        grads[stepwise] = torch.autograd.grad(out.value.sum(), list(params.values()))
    for whole, steps in zip(grads[False], grads[True]):
        torch.testing.assert_close(whole, steps, rtol=1e-12, atol=1e-14)
        assert whole.abs().sum() > 0


def test_straight_through_forward_is_the_sampled_sequence():
    problem, stgs = ChainProblem(), estimators.build("stgs")
    view, noise = _noise(problem, stgs)
    assert view.stepwise and view.family == "categorical"
    params = {k: v.detach().expand(24, *v.shape).clone() for k, v in problem.params.items()}
    dist = problem.distribution(params)
    value = view.surrogate(stgs, dist, noise, None).value
    torch.testing.assert_close(value, dist.objective(dist.sample(noise["sample"])).sum(-1), rtol=1e-12, atol=1e-14)


SEQUENCE_ESTIMATORS = ["reinforce", "reinforce-ema", "rloo", "stgs", "st", "gumbel-softmax", "gst", "gst(gap='p')",
                       "gr-mc(k=3)"]


@pytest.mark.parametrize("spec", SEQUENCE_ESTIMATORS)
def test_engines_agree_per_draw(spec):
    problem, estimator = ChainProblem(), estimators.build(spec)
    view, noise = _noise(problem, estimator, n=8)
    state = estimator.init(view.template, torch.Generator().manual_seed(0))
    fast = per_draw_gradients(view, estimator, state, noise, "vectorized")
    slow = per_draw_gradients(view, estimator, state, noise, "loop")
    for group in fast:
        torch.testing.assert_close(fast[group], slow[group], rtol=1e-10, atol=1e-12)
        assert torch.isfinite(fast[group]).all()


def test_reinforce_reference_agrees_with_exact():
    problem = ChainProblem()
    exact = resolve_reference(problem, "auto", 0, 0)
    assert exact.kind == "exact"
    mc = reinforce_reference(problem, 40_000, seed=1)
    for group, g in exact.gradient.items():
        assert float((mc.gradient[group] - g).norm()) <= BIAS_FLOORS * mc.stderr(group), group
        assert float(g.norm()) > 10 * mc.stderr(group)  # the check has power


def test_too_many_sequences_fall_back_to_reinforce():
    problem = ChainProblem()
    problem.max_sequences = 10
    reference = resolve_reference(problem, "auto", 4000, 0)
    assert reference.kind == "reinforce" and reference.samples == 4000
    with pytest.raises(UserError, match="too large to enumerate"):
        resolve_reference(problem, "exact", 4000, 0)


@pytest.mark.parametrize("spec", ["reinforce", "rloo(m=3)"])
def test_unbiased_estimators_match_the_exact_gradient(spec):
    problem = ChainProblem()
    reference = resolve_reference(problem, "exact", 0, 0)
    result = measure(problem, estimators.build(spec), reference.gradient, MeasureConfig(20_000, 3))
    for group, summary in result.groups.items():
        assert summary.metrics["bias_norm"].value <= BIAS_FLOORS * summary.metrics["bias_noise_floor"].value, group


def test_straight_through_is_biased_here():
    """The bias check has power on sequences too: STGS is caught."""
    problem = ChainProblem()
    reference = resolve_reference(problem, "exact", 0, 0)
    summary = measure(problem, estimators.build("stgs"), reference.gradient, MeasureConfig(20_000, 3)).groups["theta"]
    assert summary.metrics["bias_norm"].value > BIAS_FLOORS * summary.metrics["bias_noise_floor"].value


def test_compatibility_with_a_decision_sequence():
    listops = tasks.info("listops")
    assert compatibility(estimators.info("stgs"), listops) == (True, "categorical")
    assert compatibility(estimators.info("reinforce"), listops) == (True, "categorical-sequence")
    assert compatibility(estimators.info("rloo"), listops, {"m": 8}) == (True, "categorical-sequence")
    stgs = estimators.info("stgs")
    twice = dataclasses.replace(stgs, capabilities={**stgs.capabilities, "evaluations": 2})
    ok, why = compatibility(twice, listops)
    assert not ok and "2^T" in why
    stateful = dataclasses.replace(stgs, capabilities={**stgs.capabilities, "stateful": True})
    ok, why = compatibility(stateful, listops)
    assert not ok and "stateful" in why
    assert seen_stepwise(estimators.build("gst")) and not seen_stepwise(estimators.build("rloo"))


@dataclass(frozen=True)
class OddNoise(Estimator):
    """Draws noise that is not per decision."""

    name = "odd-noise"
    unbiased = False

    def noise(self, dist):
        return {"extra": NoiseSpec("normal", (4,))}

    def surrogate(self, dist, f, noise, state):
        return Surrogate(f(dist.probs).reshape(dist.n, -1).sum(1))


def test_noise_that_is_not_per_decision_is_refused():
    problem, odd = ChainProblem(), OddNoise()
    params = {k: v.detach()[None] for k, v in problem.params.items()}
    noise = {"extra": torch.zeros(1, 4, dtype=torch.float64)}
    with pytest.raises(UserError, match="not per decision"):
        problem.distribution(params).surrogate(odd, noise, None, stepwise=True)
