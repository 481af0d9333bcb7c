"""VIMCO and the m-sample bound it is measured on.

The bound's exact gradient is checked two independent ways (m = 1 is the ELBO, and
central differences of a brute-force loop over tuples); VIMCO's unbiasedness for the
bound is in the conformance suite (m = 5 and m = 2, 4 noise floors).
"""

import itertools
import json
import math

import pytest
import torch

from conftest import bias_ok, measure_spec, problem_of
from gradbench.bounds import ImportanceWeightedBound
from gradbench.errors import UserError
from gradbench.estimators.vimco import leave_one_out_bounds
from gradbench.references import enumerate_gradient, resolve_reference
from gradbench.registry import estimators
from gradbench.run import RunOptions, execute, prepare


def test_leave_one_out_bounds_match_the_definition():
    log_w = torch.randn(6, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    fast = leave_one_out_bounds(log_w)
    for j in range(6):
        others = torch.cat([log_w[:j], log_w[j + 1 :]])
        replaced = torch.cat([others, others.mean(0, keepdim=True)])
        torch.testing.assert_close(fast[j], torch.logsumexp(replaced, 0) - math.log(6), rtol=1e-12, atol=1e-12)


def test_one_sample_bound_is_the_elbo():
    base = problem_of("toy-latent")
    torch.testing.assert_close(ImportanceWeightedBound(base, 1).exact_gradient()["logits"],
                               enumerate_gradient(base)["logits"], rtol=1e-12, atol=1e-14)


def _bound_by_loops(logits, table, m):
    """E Σ_units −log (1/m) Σ_j p/q, by explicit loops over every unit and tuple."""
    total = 0.0
    for unit in range(logits.shape[0]):
        q = torch.softmax(logits[unit], 0)
        for tup in itertools.product(range(logits.shape[1]), repeat=m):
            prob = math.prod(float(q[z]) for z in tup)
            weights = [math.exp(float(table[unit, z])) / float(q[z]) for z in tup]
            total += prob * -math.log(sum(weights) / m)
    return total


@pytest.mark.parametrize("m", [2, 3])
def test_bound_gradient_matches_central_differences_of_a_brute_force_bound(m):
    base = problem_of("toy-latent")
    exact = ImportanceWeightedBound(base, m).exact_gradient()["logits"].reshape(base.logits.shape)
    h = 1e-6
    for index in [(0, 0), (0, 3), (1, 1)]:
        plus, minus = base.logits.clone(), base.logits.clone()
        plus[index] += h
        minus[index] -= h
        numeric = (_bound_by_loops(plus, base.table, m) - _bound_by_loops(minus, base.table, m)) / (2 * h)
        assert math.isclose(float(exact[index]), numeric, rel_tol=1e-6, abs_tol=1e-9)


def test_vimco_is_measured_against_its_own_objective():
    """The bound's gradient differs from the ELBO's, so measuring VIMCO against the ELBO would show a bias."""
    base = problem_of("toy-latent")
    vimco = estimators.build("vimco")
    bound = base.for_estimator(vimco)
    assert isinstance(bound, ImportanceWeightedBound) and bound.m == 5
    assert base.for_estimator(vimco) is bound  # one object per m: one reference per run
    assert base.for_estimator(estimators.build("reinforce")) is base
    elbo, iwae = enumerate_gradient(base)["logits"], bound.exact_gradient()["logits"]
    assert float((elbo - iwae).norm()) > 0.3 * float(elbo.norm())
    result, _ = measure_spec("toy-latent", "vimco(m=3)", samples=50_000, seed=8)
    assert bias_ok(result.groups["logits"])


def test_a_run_computes_one_reference_per_objective(tmp_path):
    options = RunOptions(samples=2000, seed=0, out=str(tmp_path), device="cpu")
    plan = prepare("toy-latent", ["reinforce", "vimco", "vimco(m=2)"], options)
    result = execute(plan)
    norms = {m.estimator.label: m.groups["logits"].metrics["reference_norm"].value for m in result.measurements}
    assert len(set(norms.values())) == 3  # the ELBO, the 5-sample bound and the 2-sample bound
    sidecar = json.loads((result.run_dir / "_run.json").read_text())
    assert set(sidecar["reference"]) == {"reinforce", "vimco", "vimco(m=2)"}


def test_vimco_needs_a_task_with_importance_weights_and_an_enumerable_bound():
    with pytest.raises(UserError, match="offers importance_weights"):
        prepare("toy-quadratic", ["vimco"], RunOptions())
    bound = problem_of("toy-latent").for_estimator(estimators.build("vimco(m=20)"))
    with pytest.raises(UserError, match="too many to enumerate"):
        resolve_reference(bound, "auto", 1000, 0)
