"""Every registered estimator on every compatible fixed task (and extra configurations).

Checks: finite estimates of the right shape; both engines give the same per-draw
gradients for the same noise; same seed, bit-identical metrics; unbiased estimators
match the exact gradient within BIAS_FLOORS noise floors (false alarm ≤ 6.3e-5 per
pair); biased ones are caught as biased where they must be (the check has power).

Declared capabilities are checked from the declarations alone (no per-estimator
code): the evaluations of f counted per estimate equal the declared ``evaluations``;
an estimator declaring ``relaxed_f`` false only ever gives f outcomes (and runs on
toy-blackbox, whose f raises on anything else); a stateless estimator's ``update``
returns its state unchanged; the biased list is every configuration declaring
``unbiased`` false.
"""

import dataclasses
import itertools

import pytest
import torch

from conftest import BIAS_FLOORS, bias_ok, is_unbiased, measure_spec, problem_of
from gradbench.noise import NoiseSource
from gradbench.registry import compatibility, estimators, tasks
from gradbench.engine import View, init_state, per_draw_gradients, replicate, warm_up
from gradbench.spec import parse_spec

EXTRA_TASKS = [
    # A masked categorical: every estimator that declares masks must handle -inf logits.
    "toy-quadratic(logits=[0.3, -0.2, 1.0, 0.5, 0.1], target=[0.1, 0.6, 0.2, 0.1, 0.0], mask=[1, 0, 1, 1, 1])",
    "toy-bernoulli(logits=[-1.0, 0.5, 2.0], target=0.3)",
    # Not quadratic: first-order Taylor baselines are not exact (the must-show unbiasedness case).
    "toy-bernoulli(objective='sine', logits=[0.5, -1.0, 0.0, 1.5])",
    # Permutations: the non-quadratic ranking objective on a different k.
    "toy-permutation(k=4, objective='dcg')",
]
EXTRA_ESTIMATORS = ["gst(gap='p')", "gst(hard=False, tau=0.5)", "gst(gap=0.0)", "rloo(m=2)", "gr-mc(k=1)",
                    "nvil(normalize=True)", "vimco(m=2)", "rebar(adapt=False)",
                    "gengs(hard=True)", "gengs(n=3, tail='renormalize', tau=0.5)", "stgs(tau=1.3)",
                    "softsort(hard=True, tau=0.5)", "pl-relax(adapt=False)"]


# Fixed tasks checked at a smaller size than their defaults: poly's 128 variables make every
# per-variable estimator cost 257 evaluations of f; 8 variables with spread logits test the same code.
SMALLER = {"poly": "poly(dim=8, init=1.0)"}


def _fixed_tasks():
    fixed = [n for n in tasks.names() if tasks.info(n).capabilities["kind"] == "fixed"]
    return [SMALLER.get(n, n) for n in fixed] + EXTRA_TASKS


def _pairs():
    out = []
    for task_spec, est_spec in itertools.product(_fixed_tasks(), estimators.names() + EXTRA_ESTIMATORS):
        t, e = parse_spec(task_spec), parse_spec(est_spec)
        masked = "mask" in t.kwargs and not estimators.info(e.name).capability("masks", e.kwargs)
        if compatibility(estimators.info(e.name), tasks.info(t.name), e.kwargs)[0] and not masked:
            out.append(pytest.param(task_spec, est_spec, id=f"{est_spec}-on-{task_spec[:40]}"))
    return out


PAIRS = _pairs()

# The default suite runs the expensive per-pair checks (bit-for-bit reruns, unbiasedness at
# 200,000 estimates) on a subset that still reaches every estimator configuration and every
# task: each estimator configuration on its first Bernoulli and its first categorical toy task
# (or, fitting neither, its first task), each task with `reinforce`, and the cases below. On
# the count tasks' truncated categorical view (K up to ~60) IndeCateR, MuProp, REBAR and RELAX
# cost many times more. `pytest -m slow` runs every other pair at the same sizes and
# tolerances, and CI runs them (docs/development.md).
ALWAYS = {("toy-bernoulli(objective='sine', logits=[0.5, -1.0, 0.0, 1.5])", "muprop"),  # non-quadratic f
          ("poisson", "stgs")}  # a categorical estimator on a count task's truncated view


def _kind(task_spec: str) -> str:
    """The kind of variable a fixed task holds, as far as choosing the default subset goes."""
    kinds = {"toy-bernoulli": "bernoulli", "toy-quadratic": "categorical", "toy-latent": "categorical"}
    return kinds.get(parse_spec(task_spec).name, "other")  # count tasks, the black box


def default_subset(pairs, kinds=("bernoulli", "categorical")):
    """``pairs`` with every pair outside the default subset marked slow (same order and ids).

    ``kinds``: the kinds of task on which each estimator configuration gets its own pair (an
    estimator that fits none of them still gets its first pair)."""
    keep, estimators_seen, tasks_seen = set(ALWAYS), set(), set()
    for p in sorted(pairs, key=lambda p: not p.values[0].startswith("toy-")):  # stable: toy tasks first
        task_spec, est_spec = p.values
        kind = _kind(task_spec)
        first_of_estimator = all(e != est_spec for e, _ in estimators_seen)
        if (est_spec, kind) not in estimators_seen and (kind in kinds or first_of_estimator):
            estimators_seen.add((est_spec, kind))
            keep.add((task_spec, est_spec))
    for p in pairs:
        task_spec, est_spec = p.values
        if task_spec not in tasks_seen and est_spec == "reinforce":
            tasks_seen.add(task_spec)
            keep.add((task_spec, est_spec))
    for p in pairs:  # a task that reinforce does not fit: its first pair
        if p.values[0] not in tasks_seen:
            tasks_seen.add(p.values[0])
            keep.add(tuple(p.values))
    return [p if tuple(p.values) in keep else pytest.param(*p.values, id=p.id, marks=pytest.mark.slow)
            for p in pairs]


def _setup(task_spec, est_spec, n=32, seed=0):
    problem = problem_of(task_spec)
    estimator = estimators.build(est_spec)
    view = View(problem, estimator)
    state = init_state(view, estimator, seed)
    if estimator.stateful:
        state = warm_up(view, estimator, state, 20, seed)
    noise = NoiseSource(seed, "test", view.template.params.device).draw_all(estimator.noise(view.template), 0, n)
    return problem, estimator, view, state, noise


def test_every_estimator_runs_somewhere():
    covered = {p.values[1] for p in PAIRS}
    assert set(estimators.names()) <= covered


@pytest.mark.parametrize("task_spec, est_spec", PAIRS)
def test_finite_estimates_with_the_parameter_shape(task_spec, est_spec):
    problem, estimator, view, state, noise = _setup(task_spec, est_spec)
    grads = per_draw_gradients(view, estimator, state, noise)
    for group, p in problem.parameters().items():
        assert grads[group].shape == (32, p.numel())
        assert torch.isfinite(grads[group]).all()
        assert grads[group].abs().sum() > 0, "every estimator should move the parameters on these tasks"


@pytest.mark.parametrize("task_spec, est_spec", PAIRS)
def test_engines_agree_per_draw(task_spec, est_spec):
    """The vectorised engine equals the plain per-draw autograd loop, draw by draw."""
    problem, estimator, view, state, noise = _setup(task_spec, est_spec, n=16)
    fast = per_draw_gradients(view, estimator, state, noise, "vectorized")
    slow = per_draw_gradients(view, estimator, state, noise, "loop")
    for group in fast:
        torch.testing.assert_close(fast[group], slow[group], rtol=1e-10, atol=1e-12)


@pytest.mark.cpu_only(reason="bit-for-bit identity of repeated runs is promised on CPU only (docs/gpu.md)")
@pytest.mark.parametrize("task_spec, est_spec", default_subset(PAIRS))
def test_same_seed_same_numbers(task_spec, est_spec):
    a, _ = measure_spec(task_spec, est_spec, samples=500, seed=3, warmup=10)
    b, _ = measure_spec(task_spec, est_spec, samples=500, seed=3, warmup=10)
    c, _ = measure_spec(task_spec, est_spec, samples=500, seed=4, warmup=10)
    timing = {"seconds_per_estimate", "work_normalized_variance"}  # wall-clock, never reproducible
    for group in a.groups:
        same = lambda m: {k: v for k, v in m.groups[group].metrics.items() if k not in timing}  # noqa: E731
        assert same(a) == same(b)  # bit for bit
        assert torch.equal(a.groups[group].mean, b.groups[group].mean)
        mean_sq = float(a.groups[group].mean @ a.groups[group].mean)
        if a.groups[group].metrics["variance"].value > 1e-12 * mean_sq:  # else deterministic: nothing to vary
            assert a.groups[group].metrics["variance"] != c.groups[group].metrics["variance"]


UNBIASED = [p for p in PAIRS if is_unbiased(p.values[1])]
# Fewer estimates where each costs many evaluations of f (IndeCateR: K·D + 1, K up to ~60 on
# the count views; unordered-set and sum-and-sample: k or k + 1 per variable, 128 variables on
# poly) or trains a control variate per step (REBAR, RELAX, RODEO, Double-CV). The check stays a
# valid test at any size (the floor is estimated from the same draws); these estimators'
# variance is low enough that it still resolves biases of a few per cent.
SAMPLES = {"indecater": 5_000, "rebar": 20_000, "relax": 20_000, "unordered-set": 5_000, "sum-and-sample": 5_000,
           "rodeo": 20_000, "double-cv": 20_000}


@pytest.mark.parametrize("task_spec, est_spec", default_subset(UNBIASED))
def test_unbiased_estimators_match_the_exact_gradient(task_spec, est_spec):
    samples = SAMPLES.get(parse_spec(est_spec).name, 200_000)
    result, _ = measure_spec(task_spec, est_spec, samples=samples, seed=11, warmup=200)
    for group, summary in result.groups.items():
        bias, floor = summary.metrics["bias_norm"].value, summary.metrics["bias_noise_floor"].value
        assert bias_ok(summary), f"{est_spec}: bias {bias:.3g} > {BIAS_FLOORS} × floor {floor:.3g}"


BIASED = [spec for spec in estimators.names() + EXTRA_ESTIMATORS if not is_unbiased(spec)]


@pytest.mark.parametrize("est_spec", BIASED)
def test_biased_estimators_are_detected(est_spec):
    """Every configuration declaring unbiased=False is caught as biased (> BIAS_FLOORS noise floors) on
    at least one compatible fixed task: the declaration is honest and the unbiasedness check has power.
    Tasks are tried in order until one shows the bias (20,000 estimates each, a second or less)."""
    seen = []
    for task_spec, spec in (p.values for p in PAIRS):
        if spec != est_spec:
            continue
        result, _ = measure_spec(task_spec, est_spec, samples=20_000, seed=11, warmup=200)
        ratios = [s.metrics["bias_norm"].value / s.metrics["bias_noise_floor"].value for s in result.groups.values()]
        if max(ratios) > BIAS_FLOORS:
            return
        seen.append(f"{task_spec}: {max(ratios):.2f} floors")
    pytest.fail(f"{est_spec} declares unbiased=False but no compatible task shows a bias: {seen}")



# -- declared capabilities, checked for every registered estimator --------------------------------------------------

OUTCOME_TOLERANCE = 1e-9  # straight-through inputs D − sg(h) + h equal the outcome D up to float64 rounding


class _Watched:
    """A view's objective wrapped to count the rows f (and log p(x, z)) is evaluated on and check them.

    With ``outcomes_only``, every input must be an outcome within OUTCOME_TOLERANCE: one-hot
    on the categorical family, whole numbers (0/1, counts) on the others.
    """

    def __init__(self, view: View, outcomes_only: bool):
        self.rows = {"fn": 0, "log_joint": 0}
        self.categorical = view.family == "categorical"
        self.outcomes_only = outcomes_only
        f = view.objective
        joint = None if f.log_joint is None else self._watch("log_joint", f.log_joint)
        view.objective = dataclasses.replace(f, fn=self._watch("fn", f.fn), log_joint=joint)

    def _watch(self, key, fn):
        def watched(x):
            self.rows[key] += x.shape[0]
            if self.outcomes_only:
                self._check_outcome(x.detach())
            return fn(x)
        return watched

    def _check_outcome(self, x):
        off = (x - x.round()).abs().max().item()
        assert off <= OUTCOME_TOLERANCE, f"f was given a relaxed point ({off:.3g} from the nearest outcome)"
        if self.categorical:
            assert ((x.round() == 0) | (x.round() == 1)).all() and torch.allclose(
                x.sum(-1), torch.ones((), dtype=x.dtype), atol=OUTCOME_TOLERANCE), "f was given a non-one-hot point"

    def evaluations(self, n: int) -> float:
        """Evaluations per estimate: rows of f, or of log p(x, z) for estimators that use only that (VIMCO)."""
        return (self.rows["fn"] or self.rows["log_joint"]) / n


def _watched_surrogate(task_spec, est_spec, n=8):
    """Build one surrogate of ``n`` estimates through a watched objective; returns what is checked."""
    estimator = estimators.build(est_spec)
    problem = problem_of(task_spec).for_estimator(estimator)
    view = View(problem, estimator)
    watched = _Watched(view, outcomes_only=not estimator.capability("relaxed_f"))
    state = init_state(view, estimator, 0)
    noise = NoiseSource(0, "test").draw_all(estimator.noise(view.template), 0, n)
    params = replicate(problem.parameters(), n)
    dist = view.distribution(params)
    out = view.surrogate(estimator, dist, noise, state)
    return estimator, view, watched, state, dist, noise, out


@pytest.mark.parametrize("task_spec, est_spec", PAIRS)
def test_declared_evaluations_and_inputs_of_f(task_spec, est_spec):
    """Counted evaluations of f per estimate equal the declaration; relaxed_f=False means outcomes only."""
    n = 8
    estimator, view, watched, *_ = _watched_surrogate(task_spec, est_spec, n)
    assert watched.evaluations(n) == estimator.n_evaluations(view.template), (
        f"{est_spec} declares {estimator.capability('evaluations')} = {estimator.n_evaluations(view.template)} "
        f"evaluations of f per estimate, counted {watched.evaluations(n)}")


@pytest.mark.parametrize("task_spec, est_spec", [p for p in PAIRS if not estimators.build(p.values[1]).stateful])
def test_stateless_estimators_keep_their_state(task_spec, est_spec):
    estimator, view, watched, state, dist, noise, out = _watched_surrogate(task_spec, est_spec)
    assert estimator.update(state, dist, view.objective, noise, out) is state


def test_every_estimator_that_needs_no_relaxed_input_runs_on_the_black_box():
    """toy-blackbox's f raises on relaxed inputs; every estimator declaring neither relaxed_f nor
    differentiable_f (at its defaults) fits it, and the pairs above have run them on it. Estimators
    needing a feature it does not offer (VIMCO's importance weights) are watched on their own tasks."""
    blackbox = tasks.info("toy-blackbox")
    assert not blackbox.capability("relaxed_f") and not blackbox.capability("differentiable_f")
    discrete = {n for n in estimators.names()
                if not estimators.info(n).capability("relaxed_f") and not estimators.info(n).capability("differentiable_f")
                and not estimators.info(n).capability("requires")}
    on_blackbox = {p.values[1] for p in PAIRS if p.values[0] == "toy-blackbox"}
    assert discrete and discrete <= on_blackbox, sorted(discrete - on_blackbox)


def test_the_black_box_rejects_relaxed_inputs():
    """The check above has power: a relaxed estimator forced onto toy-blackbox fails."""
    from gradbench.tasks.toy_blackbox import RelaxedInputError

    problem = problem_of("toy-blackbox")
    estimator = estimators.build("gumbel-softmax")
    view = View(problem, estimator)
    noise = NoiseSource(0, "test").draw_all(estimator.noise(view.template), 0, 4)
    with pytest.raises(RelaxedInputError):
        per_draw_gradients(view, estimator, None, noise)
    assert not compatibility(estimators.info("gumbel-softmax"), tasks.info("toy-blackbox"))[0]


def test_the_outcome_check_has_power():
    """A relaxed estimator watched as if it declared relaxed_f=False is caught on any task."""
    estimator = estimators.build("gumbel-softmax")
    view = View(problem_of("toy-quadratic"), estimator)
    _Watched(view, outcomes_only=True)
    noise = NoiseSource(0, "test").draw_all(estimator.noise(view.template), 0, 4)
    with pytest.raises(AssertionError, match="relaxed point"):
        per_draw_gradients(view, estimator, None, noise)
