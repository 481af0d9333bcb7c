"""Count distributions and tasks: pmfs, tails, exact sampling, exact references, score-function unbiasedness.

Statistical tests: fixed seeds; bias within BIAS_FLOORS = 4 noise floors (false alarm
≤ 6.3e-5 each); goodness of fit by a χ² test at p > 1e-4 (false alarm 1e-4 each).
The tests of GenGS itself are in test_gengs.py.
"""

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import BIAS_FLOORS, measure_spec, problem_of
from gradbench.families import counts as cd
from gradbench.errors import SpecError
from gradbench.noise import NoiseSource
from gradbench.references import enumerate_gradient
from gradbench.registry import tasks

F64 = torch.float64
CASES = [  # family, parameters (several scales), fixed arguments
    ("poisson", [0.5, 5.0, 50.0], {}),
    ("binomial", [0.05, 0.5, 0.9], {"total_count": 12}),
    ("negative-binomial", [0.2, 0.5, 0.8], {"total_count": 2.5}),
    ("geometric", [0.1, 0.5, 0.9], {}),
]
IDS = [c[0] for c in CASES]


def _dist(family, values, fixed, n=1):
    params = torch.tensor(values, dtype=F64).expand(n, len(values)).clone()
    return cd.DISTRIBUTIONS[family](params, **fixed)


@pytest.mark.parametrize("family, values, fixed", CASES, ids=IDS)
def test_pmf_table_and_scipy_agree_with_torch(family, values, fixed):
    """The sampler's table and the host-side scipy tails use torch.distributions' convention."""
    dist = _dist(family, values, fixed)
    torch_pmf = dist.log_pmf_head(dist.grid)[0].exp()  # [B, grid]
    table = dist._log_pmf_table(dist.params.reshape(-1), dist.grid).exp()
    scipy_pmf = dist._scipy(np.array(values)[:, None]).pmf(np.arange(dist.grid))
    torch.testing.assert_close(table, torch_pmf, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(scipy_pmf, torch_pmf.numpy(), rtol=1e-9, atol=1e-300)
    torch.testing.assert_close(torch_pmf.sum(-1), torch.ones(len(values), dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("family, values, fixed", CASES, ids=IDS)
def test_truncation_levels_are_the_smallest_that_meet_the_tail_bound(family, values, fixed):
    dist = _dist(family, values, fixed)
    for eps in (0.3, 1e-3, 1e-8, cd.SAMPLING_TAIL):
        level = dist.tail_level(eps)
        assert dist.tail_mass(level) <= eps
        if dist.support_size is None or level < dist.support_size:
            assert dist.tail_mass(level - 1) > eps
    assert dist.grid == dist.tail_level(cd.SAMPLING_TAIL)
    assert dist.truncation_level(n=1) == cd.MIN_LEVEL
    if family == "binomial":  # finite support: the whole support, nothing dropped, whatever is asked
        assert dist.grid == 13 and dist.truncation_level(n=50) == 13
        assert dist.tail_mass(13) == 0.0


@pytest.mark.parametrize("family, values, fixed", CASES, ids=IDS)
def test_samples_follow_the_pmf(family, values, fixed):
    """χ² goodness of fit per variable over 200k draws, cells merged to expected counts ≥ 20."""
    dist = _dist(family, values, fixed)
    n = 200_000
    u = NoiseSource(1, "test").draw("u", dist.sample_noise(), 0, n)  # [n, B]: n draws of the one copy
    z = dist.sample(u.unsqueeze(0)).reshape(n, len(values))  # noise [copies, draws, B] -> [draws, copies, B]
    assert torch.equal(z, z.round()) and z.min() >= 0
    pmf = dist.log_pmf_head(dist.grid)[0].exp().numpy()
    for i in range(len(values)):
        counts = np.bincount(z[:, i].long().numpy(), minlength=dist.grid)
        observed, expected = _merge(counts, pmf[i] * n)
        assert stats.chisquare(observed, expected).pvalue > 1e-4


def _merge(counts, expected, least=20.0):
    """Merge adjacent cells until each expects at least ``least`` draws."""
    obs, exp, o, e = [], [], 0, 0.0
    for c, x in zip(counts, expected):
        o, e = o + c, e + x
        if e >= least:
            obs.append(o), exp.append(e)
            o, e = 0, 0.0
    obs[-1] += o
    exp[-1] += e
    exp = np.array(exp) * (sum(obs) / sum(exp))
    return np.array(obs), exp


def test_geometric_closed_form_inverse_equals_the_table_search():
    dist = _dist("geometric", [0.05, 0.3, 0.9], {}, n=4)
    noise = NoiseSource(2, "test").draw("u", dist.sample_noise(), 0, 4 * 25_000).reshape(4, 25_000, 3)
    assert torch.equal(dist.sample(noise), cd.CountDistribution.sample(dist, noise))


def test_sampling_is_the_inverse_cdf_and_memory_blocks_do_not_change_it(monkeypatch):
    """u in (F(k−1), F(k)] gives k; the extreme uniforms stay on the grid; copies keep their own
    parameters; cutting the CDF table into blocks gives identical samples."""
    dist = cd.Poisson(torch.tensor([[3.0], [40.0]], dtype=F64))  # two copies, one variable
    cdf = np.stack([stats.poisson(rate).cdf(np.arange(dist.grid)) for rate in (3.0, 40.0)])
    k = np.array([[0, 2], [5, 41]])  # per copy, two values to hit
    u = [[(cdf[c, j - 1] if j else 0.0) / 2 + cdf[c, j] / 2 for j in k[c]] for c in range(2)]
    z = dist.sample(torch.tensor(u, dtype=F64).unsqueeze(-1))  # noise [copies, draws, 1] -> [draws, copies, 1]
    assert z.squeeze(-1).T.tolist() == k.tolist()
    edges = dist.sample(torch.tensor([[[0.0, 1 - 2**-53]], [[0.0, 1 - 2**-53]]], dtype=F64).movedim(-1, 1))
    assert edges[0].eq(0).all() and (edges[1] >= 26).all() and (edges[1] <= dist.grid - 1).all()
    noise = NoiseSource(0, "test").draw("u", dist.sample_noise(), 0, 2 * 5000).reshape(2, 5000, 1)
    whole = dist.sample(noise)
    monkeypatch.setattr(cd, "_TABLE_VALUES", dist.grid)  # one copy per block
    assert torch.equal(dist.sample(noise), whole)


def _last_bin(dist, level):
    """The last bin's log mass log P(z ≥ level − 1) of the categorical view: ``[n, B]``."""
    return dist.truncated_categorical(level).logits[..., -1]


TAIL_CASES = CASES + [("negative-binomial", [0.5, 0.95], {"total_count": 0.4})]  # r < 1: not log-concave


@pytest.mark.parametrize("family, values, fixed", TAIL_CASES, ids=IDS + ["negative-binomial-r<1"])
def test_last_bin_holds_the_tail_accurately_at_any_level(family, values, fixed):
    """log P(z ≥ K − 1) against scipy's logsf to 1e-10 relative in the mass: at the default level
    (tail ≤ 1e-15, where 1 − Σ head was rounding noise), a small level (tail near 1) and a level
    past the grid (tail far below 1e-15; checked where scipy's sf does not underflow to 0, its logsf
    being log(sf)). The binomial's level 13 is its whole support (no tail bin)."""
    dist = _dist(family, values, fixed)
    frozen = dist._scipy(np.array(values))
    for level in (dist.truncation_level(), 3, dist.grid + 25):
        if dist.support_size is not None and level >= dist.support_size:
            continue
        theirs = torch.tensor(frozen.logsf(level - 2), dtype=F64)  # scipy's sf(k) = P(z > k)
        known = theirs > -700
        assert known.any()
        torch.testing.assert_close(_last_bin(dist, level)[0][known], theirs[known], rtol=0, atol=1e-10)


@pytest.mark.parametrize("family, values, fixed", TAIL_CASES, ids=IDS + ["negative-binomial-r<1"])
def test_last_bin_is_the_same_batched_or_alone(family, values, fixed):
    """Each copy's tail is its own sum: 64 copies give the one copy's mass to 1e-15 relative (the
    sum's rounding may depend on the batch's layout; 1 − Σ head differed by up to 0.22 in log mass here)."""
    dist, batched = _dist(family, values, fixed), _dist(family, values, fixed, n=64)
    for level in (dist.truncation_level(), 3):
        level = min(level, dist.support_size - 1) if dist.support_size else level
        alone = _last_bin(dist, level)
        torch.testing.assert_close(_last_bin(batched, level), alone.expand(64, -1), rtol=0, atol=1e-15)


def test_geometric_last_bin_and_its_gradient_are_the_closed_form():
    """P(z ≥ k) = (1 − p)^k: value and d/dp = −k/(1 − p) through autograd, at both ends of the tail."""
    p = torch.tensor([[0.05, 0.3, 0.9]], dtype=F64, requires_grad=True)
    dist = cd.Geometric(p)
    for level in (dist.truncation_level(), 3):
        k = level - 1
        tail = _last_bin(dist, level)[0]
        torch.testing.assert_close(tail, k * torch.log1p(-p[0].detach()), rtol=1e-13, atol=0)
        (grad,) = torch.autograd.grad(tail.sum(), p)
        torch.testing.assert_close(grad[0], -k / (1 - p[0].detach()), rtol=1e-12, atol=0)


@pytest.mark.parametrize("task", ["poisson", "binomial", "negative-binomial(probs=[0.3, 0.7])",
                                  "geometric(probs=[0.4, 0.7], target=[3.0, 0.5])"])
def test_quadratic_closed_form_matches_enumeration(task):
    """E(z − t)² = Var z + (E z − t)² by autograd equals the core's brute-force enumeration."""
    problem = problem_of(task)
    closed = problem.exact_gradient()[problem.group]
    torch.testing.assert_close(closed, enumerate_gradient(problem, 1 << 22)[problem.group], rtol=1e-9, atol=1e-9)
    assert problem.exact_dropped_mass() == 0.0


def test_poisson_closed_form_is_one_plus_twice_the_gap():
    problem = problem_of("poisson(rate=[0.5, 5.0, 50.0], target=[1.0, 2.0, 60.0])")
    torch.testing.assert_close(problem.exact_gradient()["rate"], torch.tensor([0.0, 7.0, -19.0], dtype=F64))


@pytest.mark.parametrize("task", ["poisson(objective='absolute')", "binomial(objective='absolute')",
                                  "negative-binomial(objective='log1p')", "geometric(objective='log1p')"])
def test_enumerated_reference_drops_almost_nothing(task):
    problem = problem_of(task)
    ours = problem.exact_gradient()[problem.group]
    torch.testing.assert_close(ours, enumerate_gradient(problem, 1 << 22)[problem.group], rtol=1e-9, atol=1e-12)
    dropped = problem.exact_dropped_mass()
    assert dropped == 0.0 if task.startswith("binomial") else 0 < dropped < 1e-12


# Score-function estimators on the non-quadratic objectives and a wide range of scales
# (the conformance suite covers the quadratic ones at the defaults, with 200k estimates).
NONQUADRATIC = ["poisson(rate=[0.5, 5.0, 50.0], target=[1.5, 4.5, 40.0], objective='absolute')",
                "binomial(total_count=30, probs=[0.05, 0.6], objective='log1p')",
                "negative-binomial(probs=[0.2, 0.8], objective='absolute', target=[1.5, 9.5])",
                "geometric(probs=[0.1, 0.9], objective='log1p')"]


@pytest.mark.parametrize("estimator", ["reinforce", "rloo"])
@pytest.mark.parametrize("task", NONQUADRATIC, ids=lambda t: t.split("(")[0])
def test_score_function_is_unbiased_on_other_objectives(task, estimator):
    result, reference = measure_spec(task, estimator, samples=50_000, seed=3)
    (summary,) = result.groups.values()
    bias, floor = summary.metrics["bias_norm"].value, summary.metrics["bias_noise_floor"].value
    assert bias <= BIAS_FLOORS * floor, (bias, floor)
    assert floor < 0.2 * float(next(iter(reference.gradient.values())).norm())  # the check has power


@pytest.mark.parametrize("spec, message", [
    ("poisson(rate=[1.0, 0.0])", "rate[1] must be > 0"),
    ("poisson(rate=[1.0, -2.0])", "rate[1] must be > 0"),
    ("binomial(probs=[0.5, 1.0])", "probs[1] must be > 0 and < 1"),
    ("geometric(probs=[0.0])", "probs[0] must be > 0 and < 1"),
    ("binomial(total_count=0)", "total_count must be ≥ 1"),
    ("binomial(total_count=2.5)", "total_count must be an integer"),
    ("negative-binomial(total_count=0.0)", "total_count must be > 0"),
    ("poisson(rate=[1.0, 2.0], target=[1.0, 2.0, 3.0])", "target has 3 values for 2 variables"),
    ("poisson(objective='abs')", "did you mean 'absolute'"),
    ("poisson(view_n=1)", "view_n must be ≥ 2"),
    ("poisson(ratio=[1.0])", "did you mean 'rate'"),
])
def test_bad_parameters_are_rejected_in_one_line(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        tasks.build(spec)
    assert "\n" not in str(info.value)


def test_float32_sampling_and_score_function_stay_unbiased():
    from gradbench.references import resolve_reference
    from gradbench.registry import estimators
    from gradbench.engine import MeasureConfig, measure

    problem = problem_of("poisson(rate=[0.5, 5.0, 50.0], target=[1.0, 4.0, 48.0])", torch.float32)
    reference = resolve_reference(problem, "exact", 0, 0)
    result = measure(problem, estimators.build("rloo"), reference.gradient, MeasureConfig(20_000, seed=4))
    summary = result.groups["rate"]
    assert summary.mean.dtype == torch.float64 and summary.status == "ok"
    assert summary.metrics["bias_norm"].value <= BIAS_FLOORS * summary.metrics["bias_noise_floor"].value
