"""Coupled categorical DisARM (disarm-sb, disarm-tree, disarm-iw) against exact gradients.

Each estimate is a function of the node binaries (b_n, b̃_n) alone, and the pairs are
independent across nodes with a closed-form law (P(1, 0) = P(0, 1) = min(σ, 1 − σ),
P(1, 1) = (2σ − 1)₊, P(0, 0) = (1 − 2σ)₊), so E ĝ is computed exactly by enumerating the
reachable pairs of every node (3 per node) with a uniform that produces each: no
statistics, agreement to 1e-12. The statistical checks follow the suite's policy: fixed
seeds, bias within BIAS_FLOORS = 4 noise floors (false alarm ≤ 6.3e-5 per check,
tests/conftest.py).
"""

import itertools

import pytest
import torch

from conftest import bias_ok, measure_spec, problem_of
from test_frontier import CoupledProblem
from gradbench.engine import View, per_draw_gradients
from gradbench.estimators.coupled import iw_gradient, node_logits, ordering, tree
from gradbench.families.categorical import Categorical, Objective
from gradbench.references import resolve_reference
from gradbench.registry import estimators

Q4 = "toy-quadratic(logits=[0.5, -0.3, 1.0, 0.0], target=[0.1, 0.5, 0.2, 0.2])"
MASKED = "toy-quadratic(logits=[0.3, -0.2, 1.0, 0.5, 0.1], target=[0.1, 0.6, 0.2, 0.1, 0.0], mask=[1, 0, 1, 1, 1])"
SINE = "toy-bernoulli(objective='sine', logits=[0.5, -1.0, 0.0, 1.5])"
TOYS = ["toy-quadratic", Q4, MASKED, "toy-latent", "toy-bernoulli", SINE]
SPECS = {"disarm-sb": ("chain", "none"), "disarm-sb(order='ascending')": ("chain", "ascending"),
         "disarm-sb(order='descending')": ("chain", "descending"), "disarm-tree": ("balanced", "none"),
         "disarm-iw": ("chain", "ascending")}


def _node_sigmas(dist, shape, order):
    """σ(φ) ``[*batch, K − 1]`` of the estimator's nodes at the problem's parameters (one estimate)."""
    p = torch.softmax(dist.logits.detach(), -1)
    right, left = tree(dist.K, shape, p.device)
    return torch.sigmoid(node_logits(dist, ordering(p, order), right, left)).detach()[0]


def _pair_states(sigma: float):
    """(probability, a uniform giving it) of each reachable (b, b̃) of one node: (1, 0), (0, 1), then (1, 1) or (0, 0)."""
    lo, hi = min(sigma, 1 - sigma), max(sigma, 1 - sigma)
    states = [(lo, lo / 2), (lo, (1 + hi) / 2), (abs(2 * sigma - 1), 0.5)]
    return [s for s in states if s[0] > 0]


def _enumerate(sigmas):
    """All reachable node-pair configurations: probabilities ``[M]`` and uniforms ``[M, *sigmas.shape]``."""
    probs, us = [], []
    for combo in itertools.product(*(_pair_states(float(s)) for s in sigmas.reshape(-1))):
        probs.append(torch.tensor([c[0] for c in combo], dtype=torch.float64).prod())
        us.append([c[1] for c in combo])
    return torch.stack(probs), torch.tensor(us, dtype=torch.float64).reshape(-1, *sigmas.shape)


def _expected(problem, spec):
    """E ĝ, exactly, per parameter group."""
    shape, order = SPECS[spec]
    estimator = estimators.build(spec)
    view = View(problem, estimator)
    probs, u = _enumerate(_node_sigmas(view.template, shape, order))
    grads = per_draw_gradients(view, estimator, None, {"nodes": u})
    return {k: torch.einsum("m,m...->...", probs, g) for k, g in grads.items()}


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("task", TOYS + ["coupled"])
def test_exact_in_expectation(spec, task):
    """E ĝ (enumerated) equals the exact gradient to rounding on every toy task, masks and coupled f included."""
    problem = CoupledProblem(cubic=0.3) if task == "coupled" else problem_of(task)
    exact = resolve_reference(problem, "exact", 0, 0).gradient
    for group, value in _expected(problem, spec).items():
        torch.testing.assert_close(value, exact[group], rtol=0, atol=1e-12)


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("task", TOYS)
def test_unbiased_statistically(spec, task):
    """The same through the harness: 20,000 estimates (seed 6) within 4 noise floors of the exact gradient."""
    result, _ = measure_spec(task, spec, samples=20_000, seed=6)
    assert bias_ok(result.groups["logits"])


def test_iw_needs_the_ascending_stick():
    """Unsorted (the authors' code) with σ₀ = p₀ ≥ ½ the walks never both pass node 0, the pair (1, 2) never
    occurs, and the importance-weighted estimate falls short by exactly that pair's term p₁p₂(f₁ − f₂)(e₁ − e₂);
    sorted ascending it is exact in expectation."""
    logits = torch.tensor([[1.5, -0.5, 0.3]], dtype=torch.float64)
    values = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    f = Objective(lambda x: x @ values)  # x [N, 3] -> [N]
    p = torch.softmax(logits[0], -1)
    exact = p * (values - p @ values)
    missing = p[1] * p[2] * (values[1] - values[2]) * torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    for order, shortfall in (("none", missing), ("ascending", torch.zeros(3, dtype=torch.float64))):
        dist = Categorical(logits.clone())
        probs, u = _enumerate(_node_sigmas(dist, "chain", order))
        grad, _ = iw_gradient(Categorical(logits.expand(len(probs), 3).clone()), f, u, order)
        torch.testing.assert_close(exact - probs @ grad, shortfall, rtol=0, atol=1e-12)
    assert missing.abs().max() > 0.05  # 0.059: half the exact gradient of category 1


def test_two_categories_is_disarm_draw_for_draw():
    """K = 2 (a Bernoulli through its two-category view): one node, on both walks, so every variant is binary
    DisARM with the same uniform. Every p ≥ ½ keeps the ascending stick unflipped; a flipped variable (here the
    descending stick's, bar the tie at θ = 0) pairs the joint samples differently: another unbiased coupling, as
    for ARMS."""
    problem = problem_of("toy-bernoulli(objective='sine', logits=[0.5, 1.0, 0.0, 1.5])")
    u = torch.rand(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    disarm = estimators.build("disarm")
    reference = per_draw_gradients(View(problem, disarm), disarm, None, {"sample": u})["logits"]
    assert reference.abs().max() > 0
    for spec in [s for s in SPECS if "descending" not in s]:
        estimator = estimators.build(spec)
        grads = per_draw_gradients(View(problem, estimator), estimator, None, {"nodes": u[..., None]})["logits"]
        torch.testing.assert_close(grads, reference, rtol=1e-12, atol=1e-14)


def test_balanced_tree_is_the_authors_halving():
    """For K = 2^d, node i (breadth-first, level l, slot s) splits [sK/2^l, (s + 1)K/2^l) at its midpoint, b = 1 right."""
    K = 8
    right, left = tree(K, "balanced", torch.device("cpu"))
    for i in range(K - 1):
        level = (i + 1).bit_length() - 1
        slot = i - 2**level + 1
        lo, mid, hi = slot * K // 2**level, (2 * slot + 1) * K // 2 ** (level + 1), (slot + 1) * K // 2**level
        assert right[i].nonzero().flatten().tolist() == list(range(mid, hi))
        assert left[i].nonzero().flatten().tolist() == list(range(lo, mid))


@pytest.mark.parametrize("task", [Q4, MASKED, "toy-latent", SINE])
def test_lower_variance_than_rloo_at_equal_evaluations(task):
    """The paper's claim against REINFORCE leave-one-out with 2 samples (2 evaluations each), 20,000 estimates, seed 4.

    Measured (variance, rloo(m=2) first): Q4 0.0447 | sb 0.0400, tree 0.0300, iw 0.0376; masked 0.0146 |
    0.0109, 0.0109, 0.0107; toy-latent 2.76 | 1.75, 1.75, 2.14; sine 2.97 | 2.48, 2.48, 2.46. On the default
    toy-quadratic (K = 10) the margins are 2–10 % and not asserted (docs/frontier.md).
    """
    var = {s: measure_spec(task, s, samples=20_000, seed=4)[0].groups["logits"].metrics["variance"].value
           for s in ("rloo(m=2)", "disarm-sb", "disarm-tree", "disarm-iw")}
    assert max(var["disarm-sb"], var["disarm-tree"], var["disarm-iw"]) < 0.95 * var["rloo(m=2)"]
