"""gradbench.training.MovingVariance: the DisARM/RODEO/Double-CV training-time "variance".

Checked against its definition written out (explicit exponentially weighted sums), a closed
form for a constant gradient, and a statistical check on i.i.d. draws (fixed seed; the
tolerance is 5 standard deviations of the estimator, a false-alarm rate below 1e-6)."""

import math

import pytest
import torch

from gradbench.training import MovingVariance


def explicit(seq: torch.Tensor, decay: float, debiased: bool) -> float:
    """Mean over elements of Σ w_t g_t² − (Σ w_t g_t)², w_t = (1 − d)·d^(n−t), the averages started at zero."""
    n = seq.shape[0]
    w = (1 - decay) * decay ** torch.arange(n - 1, -1, -1, dtype=seq.dtype)
    c = float(w.sum()) if debiased else 1.0  # Σ w_t = 1 − dⁿ
    m1 = torch.einsum("t,t...->...", w, seq) / c
    m2 = torch.einsum("t,t...->...", w, seq * seq) / c
    return float((m2 - m1 ** 2).mean())


@pytest.mark.parametrize("debiased", [False, True])
def test_recursion_equals_the_weighted_sums_over_two_tensors(debiased):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, 4, generator=gen, dtype=torch.float64) + torch.linspace(0, 2, 50)[:, None, None]
    b = torch.randn(50, 5, generator=gen, dtype=torch.float64)
    mv = MovingVariance(0.9)
    for t in range(50):
        mv.update([a[t], b[t]])
    # Mean over all 17 elements: the two tensors' explicit values weighted by their sizes.
    want = (12 * explicit(a, 0.9, debiased) + 5 * explicit(b, 0.9, debiased)) / 17
    assert mv.value(debiased=debiased) == pytest.approx(want, rel=1e-12)


def test_a_constant_gradient_has_no_debiased_variance_but_the_zero_start_reports_some():
    g = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    mv = MovingVariance(0.999)
    for _ in range(300):
        mv.update([g])
    c = 1 - 0.999 ** 300
    # m₁ = c·g, m₂ = c·g²: the papers' zero-started value is c(1 − c)·mean(g²), an artefact of the start.
    assert mv.value() == pytest.approx(c * (1 - c) * float((g * g).mean()), rel=1e-10)
    assert abs(mv.value(debiased=True)) < 1e-12


def test_iid_draws_give_their_variance():
    """Draws N(μ, σ²) per element: E[value] = σ²·(1 − (1 − d)/(1 + d)) once dⁿ ≈ 0 (the weights' Σw²)."""
    decay, sigma, elements = 0.99, 0.5, 1000
    gen = torch.Generator().manual_seed(1)
    mv = MovingVariance(decay)
    for _ in range(3000):  # d³⁰⁰⁰ ≈ 1e-13
        mv.update([3.0 + sigma * torch.randn(elements, generator=gen, dtype=torch.float64)])
    expected = sigma ** 2 * (1 - (1 - decay) / (1 + decay))
    # Relative sd of the estimate: √(2·Σw²/elements) ≈ 0.0032 (Σw² = (1 − d)/(1 + d) ≈ 0.005).
    sd = math.sqrt(2 * (1 - decay) / (1 + decay) / elements)
    assert abs(mv.value() / expected - 1) < 5 * sd
    assert mv.value(debiased=True) == pytest.approx(mv.value(), rel=1e-9)


def test_drift_alone_counts_as_variance():
    """A gradient whose mean moves (no noise at all) still has a positive moving-average 'variance'."""
    mv = MovingVariance(0.99)
    for t in range(500):
        mv.update([torch.full((4,), 0.01 * t, dtype=torch.float64)])
    assert mv.value(debiased=True) > 1e-3


def test_state_round_trip_continues_exactly():
    gen = torch.Generator().manual_seed(2)
    seq = torch.randn(40, 6, generator=gen)
    whole, first = MovingVariance(0.999), MovingVariance(0.999)
    for t in range(40):
        whole.update([seq[t]])
    for t in range(20):
        first.update([seq[t]])
    second = MovingVariance(0.5)
    second.load_state_dict(first.state_dict())
    for t in range(20, 40):
        second.update([seq[t]])
    assert second.value() == whole.value() and second.value(debiased=True) == whole.value(debiased=True)


def test_bad_decay_and_empty_state():
    with pytest.raises(ValueError, match="decay must lie in"):
        MovingVariance(1.0)
    assert math.isnan(MovingVariance().value())
