"""Metrics and intervals on synthetic estimates with known moments (no estimators involved).

Coverage checks repeat an experiment R times with fixed seeds; a 95% interval
should cover in ≥ 90% of R = 300 repetitions (for true coverage 95% the chance of
falling below 90% is about 1e-4).
"""

import math

import torch

from gradbench.contract import Chunk
from gradbench.stats import GroupStats


def _summarize(samples, reference, batches=20, reference_variance=0.0):
    acc = GroupStats(samples.shape[1], reference)
    n = samples.shape[0]
    bounds = [round(b * n / batches) for b in range(batches + 1)]
    for b in range(batches):
        part = samples[bounds[b]: bounds[b + 1]]
        acc.add(Chunk.from_gradients(part, reference), b, 1e-3 * len(part))
    return acc.finish(reference_variance)


def _gaussian(gen, n, mean, scales):
    return mean + torch.randn(n, len(scales), generator=gen, dtype=torch.float64) * scales


def test_point_estimates_match_plain_formulas():
    gen = torch.Generator().manual_seed(0)
    x = _gaussian(gen, 5000, torch.tensor([1.0, -2.0, 0.5]), torch.tensor([1.0, 0.1, 3.0]))
    r = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64)
    s = _summarize(x, r)
    m = s.metrics
    assert math.isclose(m["variance"].value, x.var(0).sum().item(), rel_tol=1e-10)
    assert math.isclose(m["variance_per_element"].value, x.var(0).sum().item() / 3, rel_tol=1e-10)
    assert math.isclose(m["bias_norm"].value, (x.mean(0) - r).norm().item(), rel_tol=1e-10)
    assert math.isclose(m["mse"].value, ((x - r) ** 2).sum(1).mean().item(), rel_tol=1e-10)
    cos = (x @ r) / (x.norm(dim=1) * r.norm())
    assert math.isclose(m["cosine"].value, cos.mean().item(), rel_tol=1e-10)
    assert math.isclose(m["snr"].value, x.mean(0).norm().item() / math.sqrt(x.var(0).sum().item()), rel_tol=1e-10)
    assert math.isclose(m["seconds_per_estimate"].value, 1e-3, rel_tol=1e-10)
    assert math.isclose(m["relative_bias"].value, m["bias_norm"].value / r.norm().item(), rel_tol=1e-12)


def test_variance_interval_covers():
    scales = torch.tensor([1.0, 0.5, 2.0, 0.1, 1.5])
    true = float((scales**2).sum())
    covered = 0
    for rep in range(300):
        gen = torch.Generator().manual_seed(rep)
        s = _summarize(_gaussian(gen, 400, torch.zeros(5), scales), torch.zeros(5, dtype=torch.float64))
        v = s.metrics["variance"]
        covered += v.ci_low <= true <= v.ci_high
    assert covered >= 270, covered


def test_bias_interval_covers_and_accounts_for_the_reference_error():
    """The reference itself is noisy (trace variance 0.5): the interval must still cover."""
    scales = torch.tensor([1.0, 1.0, 1.0])
    true_mean = torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)
    covered = covered_naive = 0
    ref_var = 0.05
    for rep in range(300):
        gen = torch.Generator().manual_seed(1000 + rep)
        x = _gaussian(gen, 200, true_mean, scales)
        noisy_ref = torch.randn(3, generator=gen, dtype=torch.float64) * math.sqrt(ref_var / 3)
        s = _summarize(x, noisy_ref, reference_variance=ref_var)
        b = s.metrics["bias_norm"]
        covered += b.ci_low <= 0.3 <= b.ci_high
        naive = _summarize(x, noisy_ref)
        covered_naive += naive.metrics["bias_norm"].ci_low <= 0.3 <= naive.metrics["bias_norm"].ci_high
    assert covered >= 285, covered  # the triangle interval is conservative
    assert covered_naive < covered  # ignoring the reference's error loses coverage


def test_mse_and_cosine_intervals_cover():
    scales = torch.tensor([1.0, 2.0])
    mean = torch.tensor([1.0, 1.0], dtype=torch.float64)
    r = torch.tensor([1.0, 0.0], dtype=torch.float64)
    true_mse = float((scales**2).sum() + ((mean - r) ** 2).sum())
    covered = 0
    for rep in range(300):
        gen = torch.Generator().manual_seed(5000 + rep)
        m = _summarize(_gaussian(gen, 300, mean, scales), r).metrics["mse"]
        covered += m.ci_low <= true_mse <= m.ci_high
    assert covered >= 270, covered


def test_memory_is_one_vector_whatever_the_number_of_estimates():
    acc = GroupStats(1000, None)
    for b in range(200):
        acc.add(Chunk(torch.ones(1000, dtype=torch.float64), torch.ones(10, dtype=torch.float64),
                      torch.zeros(10, dtype=torch.float64)), b, 0.0)
    # Closed batches keep scalars only; the open one and the running total are the only vectors.
    assert all(not isinstance(x, torch.Tensor) or x.numel() == 1 for batch in acc.batches for x in batch)
