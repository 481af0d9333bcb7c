"""GenGS: against an independent implementation of its formula, its sample distribution,
its identity with Gumbel-Softmax/STGS on the truncated view, truncation bookkeeping, and
the bias/variance behaviour the GenGS paper predicts.

Means and variances are compared within Z = 4.5 standard errors of their difference
(false alarm 6.8e-6 each; a variance's error from the fourth moment), χ² fits
at p > 1e-4 (false alarm 1e-4 each), bias checks within BIAS_FLOORS = 4 noise floors
(false alarm 6.3e-5); intervals that must be separated are 95% intervals of independent
measurements (false alarm ≤ 0.05² per comparison when the truth is at the boundary).
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from conftest import measure_spec, problem_of
from gradbench.cli import app
from gradbench.families.counts import Poisson
from gradbench.families.categorical import Objective
from gradbench.noise import NoiseSource
from gradbench.registry import estimators
from gradbench.reports import counts_table
from gradbench.engine import View, per_draw_gradients

Z = 4.5
F64 = torch.float64


def _ours(task, est_spec, n, seed=0):
    problem = problem_of(task)
    estimator = estimators.build(est_spec)
    view = View(problem, estimator)
    noise = NoiseSource(seed, "test", view.template.params.device).draw_all(estimator.noise(view.template), 0, n)
    return per_draw_gradients(view, estimator, None, noise)


def numpy_gengs(rng, n, rate, target, level, tau, tail):
    """dF/dλ for F = (z − t)², z = Σ_k k·softmax((log π + G)/τ)_k, with its own Gumbels and scipy's pmf.

    ∂z/∂s_j = w_j (j − z)/τ; ∂ log π_k/∂λ = k/λ − 1 below the last bin; the last bin
    (1 − Σ_{k<K−1} π_k) has ∂ log/∂λ = −Σ_{k<K−1} π_k (k/λ − 1)/(1 − Σ_{k<K−1} π_k).
    Renormalising adds a constant to every logit, which softmax ignores.
    """
    k = np.arange(level)
    pi = stats.poisson(rate).pmf(k)
    dlog = k / rate - 1
    if tail == "last-bin":
        rest = 1 - pi[:-1].sum()
        pi[-1] = rest
        dlog[-1] = -(pi[:-1] * dlog[:-1]).sum() / rest
    s = np.log(pi) + rng.gumbel(size=(n, level))
    w = np.exp((s - s.max(-1, keepdims=True)) / tau)
    w /= w.sum(-1, keepdims=True)
    z = w @ k
    dz = (w * (k - z[:, None]) / tau) @ dlog
    return (2 * (z - target) * dz)[:, None]


@pytest.mark.parametrize("rate, level, tau, tail", [(0.5, 6, 1.0, "last-bin"), (5.0, 9, 0.3, "last-bin"),
                                                    (5.0, 7, 0.5, "renormalize")])
def test_gengs_matches_an_independent_implementation(rate, level, tau, tail):
    task = f"poisson(rate=[{rate}], target=[{rate}])"
    ours = _ours(task, f"gengs(n={level}, tau={tau}, tail={tail!r})", 100_000)["rate"].numpy()
    theirs = numpy_gengs(np.random.default_rng(7), 100_000, rate, rate, level, tau, tail)
    diff = ours.mean(0) - theirs.mean(0)
    se = np.sqrt(ours.var(0, ddof=1) / len(ours) + theirs.var(0, ddof=1) / len(theirs))
    assert np.all(np.abs(diff) <= Z * se), (diff, se)
    (v_ours, se_ours), (v_theirs, se_theirs) = _variance(ours[:, 0]), _variance(theirs[:, 0])
    assert abs(v_ours - v_theirs) <= Z * np.hypot(se_ours, se_theirs), (v_ours, v_theirs)


def _variance(x):
    """Variance and its standard error sqrt((m₄ − σ⁴)/n) (the estimates are heavy-tailed at small λ)."""
    c = x - x.mean()
    v = (c**2).mean()
    return v, np.sqrt(((c**4).mean() - v * v) / len(x))


def _forward(est_spec, dist, n, seed=0):
    """Forward values z ``[n, B]`` of GenGS's sample (f = identity) on ``dist`` with n copies."""
    estimator = estimators.build(est_spec)
    noise = NoiseSource(seed, "test", dist.params.device).draw_all(estimator.noise(dist), 0, n)
    seen = []
    f = Objective(lambda z: seen.append(z.detach()) or z.sum(-1))
    estimator.surrogate(dist, f, noise, None)
    return seen[0]


@pytest.mark.parametrize("tail", ["last-bin", "renormalize"])
def test_hard_samples_follow_the_truncated_pmf(tail):
    """Log-probabilities, not probabilities, are the logits: χ² against the truncated pmf."""
    rate, level, n = 3.0, 5, 100_000
    dist = Poisson(torch.full((n, 1), rate, dtype=F64))
    z = _forward(f"gengs(n={level}, hard=True, tail={tail!r})", dist, n)[:, 0].long().numpy()
    pi = stats.poisson(rate).pmf(np.arange(level))
    pi = np.append(pi[:-1], 1 - pi[:-1].sum()) if tail == "last-bin" else pi / pi.sum()
    counts = np.bincount(z, minlength=level)
    assert len(counts) == level
    assert stats.chisquare(counts, pi * n).pvalue > 1e-4


def test_soft_samples_approach_the_hard_ones_as_tau_falls():
    """Same Gumbels: mean |z_soft − z_hard| shrinks with τ (roughly like τ) and is small at τ = 0.01."""
    n = 5000
    dist = Poisson(torch.full((n, 2), 4.0, dtype=F64))
    hard = _forward("gengs(hard=True)", dist, n)
    gaps = [float((_forward(f"gengs(tau={tau})", dist, n) - hard).abs().mean()) for tau in (1.0, 0.3, 0.05, 0.01)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.03, gaps


@pytest.mark.parametrize("gengs, categorical, task", [
    ("gengs(eps=1e-05, tau=0.7)", "gumbel-softmax(tau=0.7)", "poisson(view_eps=1e-05)"),
    ("gengs(n=6, hard=True)", "stgs", "negative-binomial(view_n=6)"),
    ("gengs(hard=True)", "stgs", "binomial"),
])
def test_gengs_is_gumbel_softmax_on_the_truncated_view(gengs, categorical, task):
    """GenGS shares the view's machinery: with the same level, the same estimates (common random numbers)."""
    ours, viewed = _ours(task, gengs, 64), _ours(task, categorical, 64)
    (group,) = ours
    torch.testing.assert_close(ours[group], viewed[group], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("task, size", [("binomial(total_count=7)", 8),
                                        ("binomial(total_count=100, probs=[0.1, 0.02])", 101)])
def test_binomial_is_never_truncated(task, size):
    """Unless a truncation is asked for, GenGS and the view use the whole support: dropped mass exactly 0."""
    problem = problem_of(task)
    dist = problem.distribution({"probs": problem.values[None]})
    for spec in ("gengs", "gengs(n=500)", "gengs(tail='renormalize')", "gengs(hard=True)"):
        assert estimators.build(spec).diagnostics(dist) == {"truncation_level": size, "dropped_mass": 0.0}
    assert problem.diagnostics("categorical") == {"exact_dropped_mass": 0.0, "view_truncation_level": size,
                                                  "view_dropped_mass": 0.0}
    asked = estimators.build("gengs(eps=0.2)").diagnostics(dist)  # an explicit truncation is honoured
    assert asked["truncation_level"] < size and 0 < asked["dropped_mass"] <= 0.2
    # At the full support both tail rules are the exact pmf: identical estimates.
    a, b = _ours(task, "gengs", 64), _ours(task, "gengs(tail='renormalize')", 64)
    assert torch.equal(a["probs"], b["probs"])


def test_truncation_is_recorded_in_the_results(tmp_path):
    result = CliRunner().invoke(app, ["run", "--task", "poisson(rate=[5.0], target=[5.0], view_n=6)", "-e", "gengs(n=4)",
                                      "-e", "stgs", "-e", "rloo", "--samples", "500", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path)
    value = lambda est, metric: df.loc[(df.estimator == est) & (df.metric == metric), "value"].tolist()  # noqa: E731
    assert value("gengs", "truncation_level") == [4.0]
    assert value("gengs", "dropped_mass") == pytest.approx([stats.poisson(5.0).sf(3)], rel=1e-12)
    assert value("stgs", "view_truncation_level") == [6.0] and value("gengs", "view_truncation_level") == []
    assert value("stgs", "view_dropped_mass") == pytest.approx([stats.poisson(5.0).sf(5)], rel=1e-12)
    assert value("rloo", "exact_dropped_mass") == [0.0] and value("rloo", "truncation_level") == []
    assert df.loc[df.metric == "truncation_level", "ci_low"].isna().all()
    # The table module reads it back.
    table = counts_table.gengs_tables(counts_table.wide(df, "poisson"))
    assert "| 4 (7.3e-01) |" in table and "| stgs | 6 | 3.8e-01 |" in table and "| rloo | – | – |" in table


def test_bias_and_variance_move_as_the_gengs_paper_predicts():
    """Poisson(0.5), f = (z − 0.5)² (true gradient 1), 50k estimates each:
    truncating to {0, 1}, where f is flat, leaves no gradient (relative bias ≈ 1); with the
    mass covered (dropped ≤ 1e-8), lowering τ from 1 to 0.1 lowers the bias and raises the
    variance, both beyond their 95% intervals."""
    task = "poisson(rate=[0.5], target=[0.5])"
    m = {spec: measure_spec(task, spec, samples=50_000, seed=5)[0].groups["rate"].metrics
         for spec in ("gengs(n=2, tau=0.5)", "gengs(tau=1.0)", "gengs(tau=0.5)", "gengs(tau=0.1)")}
    assert m["gengs(n=2, tau=0.5)"]["relative_bias"].ci_low > 0.9
    assert m["gengs(tau=0.1)"]["relative_bias"].ci_high < m["gengs(tau=1.0)"]["relative_bias"].ci_low
    variance = [m[f"gengs(tau={tau})"]["variance"] for tau in (1.0, 0.5, 0.1)]
    assert variance[0].ci_high < variance[1].ci_low and variance[1].ci_high < variance[2].ci_low


@pytest.mark.parametrize("spec, message", [("gengs(n=1)", "n must be ≥ 2"), ("gengs(eps=0.0)", "eps must be ≥ 1e-15"),
                                           ("gengs(eps=1.0)", "eps must be ≥ 1e-15 and < 1"),
                                           ("gengs(tail='last')", "did you mean 'last-bin'"),
                                           ("gengs(tau=0.0)", "tau must be > 0")])
def test_bad_settings_are_rejected_in_one_line(spec, message):
    from gradbench.errors import SpecError

    with pytest.raises(SpecError, match=message) as info:
        estimators.build(spec)
    assert "\n" not in str(info.value)
