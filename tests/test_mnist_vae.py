"""mnist-vae measurement: ghost norms, engines, references (exact vs REINFORCE-LOO), unbiasedness.

Tiny models in float64 so that exact comparisons are exact; statistical checks follow
the conftest policy (fixed seeds, tolerances in standard errors, false-alarm rates stated).
"""

import pytest
import torch
from torch.func import functional_call, jvp

from conftest import BIAS_FLOORS
from gradbench.noise import NoiseSource
from gradbench.references import enumerate_gradient, resolve_reference
from gradbench.registry import estimators
from gradbench.engine import MeasureConfig, measure
from gradbench.tasks.mnist_vae.ghost import EncoderMap
from gradbench.tasks.mnist_vae.model import VAE
from gradbench.tasks.mnist_vae.problem import VAEProblem

F64 = torch.float64


def tiny(latent="categorical", latents=3, categories=4, hidden=(20, 12), activation="relu", batch=6, seed=0,
         grey=False):
    """A small VAE and a batch of images; scaled-up weights so the gradients are not all tiny."""
    torch.manual_seed(seed)
    model = VAE(latent, latents, categories, list(hidden), list(reversed(hidden)), activation).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    x = torch.rand(batch, 784, dtype=F64)
    return model, (x if grey else (x < 0.3).to(F64))


def dense_encoder_gradients(problem, grads):
    """Per-draw encoder gradients by plain autograd: Jᵀ G_s for each G_s ``[B, out]``."""
    encoder = problem.model.encoder
    params = dict(encoder.named_parameters())
    rows = []
    for g in grads:
        p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        out = functional_call(encoder, p, (problem.images,))
        rows.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(out, list(p.values()), g)]))
    return torch.stack(rows)


@pytest.mark.parametrize("batch", [3, 40])  # 3 < every layer's input width: ghost; 40 > 20, 12: direct
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_encoder_map_matches_dense_per_draw_gradients(batch, activation):
    model, x = tiny(activation=activation, batch=batch)
    problem = VAEProblem(model, x)
    grads = torch.randn(5, batch, 12, dtype=F64)
    dense = dense_encoder_gradients(problem, grads)
    for ghost in (None, [True] * 3, [False] * 3):
        emap = EncoderMap(problem.model.encoder, x, ghost)
        total, sq = emap.backward(grads)
        torch.testing.assert_close(total, dense.sum(0))
        torch.testing.assert_close(sq, (dense * dense).sum(1))
    assert problem.encoder_map.ghost == [batch < 784, batch < 20, batch < 12]


def test_encoder_map_jvp_matches_forward_mode_autodiff():
    model, x = tiny(activation="leaky_relu")
    emap = EncoderMap(model.encoder, x)
    params = dict(model.encoder.named_parameters())
    v = torch.randn(emap.dim, dtype=F64)
    tangents, offset = {}, 0
    for name, p in params.items():
        tangents[name] = v[offset : offset + p.numel()].reshape(p.shape)
        offset += p.numel()
    _, expected = jvp(lambda p: functional_call(model.encoder, p, (x,)), (params,), (tangents,))
    torch.testing.assert_close(emap.jvp(v), expected)


ESTIMATORS = ["stgs(tau=0.5)", "gst(gap=1.2)", "gst(gap='p')", "gr-mc(k=3)", "st", "gumbel-softmax",
              "reinforce", "rloo(m=3)", "reinforce-ema"]


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
@pytest.mark.parametrize("spec", ESTIMATORS)
def test_vectorized_statistics_equal_the_gst_way_per_draw(latent, spec):
    """Ghost-norm statistics equal a full forward and backward per draw (the loop engine), draw by draw."""
    model, x = tiny(latent)
    problem = VAEProblem(model, x)
    estimator = estimators.build(spec)
    view = problem.view(estimator)
    state = estimator.init(view.template, torch.Generator().manual_seed(0))
    if estimator.stateful:
        state = torch.tensor(0.3, dtype=F64)
    noise = NoiseSource(1, "test", dtype=F64).draw_all(estimator.noise(view.template), 0, 6)
    reference = {g: torch.randn(p.numel(), dtype=F64) for g, p in problem.parameters().items()}
    fast = problem.chunk_stats(estimator, state, noise, "vectorized", reference)
    slow = problem.chunk_stats(estimator, state, noise, "loop", reference)
    for group in ("encoder", "logits"):
        for field in ("total", "sq", "dot"):
            torch.testing.assert_close(getattr(fast[group], field), getattr(slow[group], field),
                                       rtol=1e-9, atol=1e-12)
        assert fast[group].sq.min() > 0


def test_pieces_of_a_chunk_add_up(monkeypatch):
    """Splitting a runner chunk into decoder-sized pieces changes nothing but rounding."""
    from gradbench.tasks.mnist_vae import problem as module

    model, x = tiny()
    problem = VAEProblem(model, x)
    estimator = estimators.build("gst")
    noise = NoiseSource(1, "test", dtype=F64).draw_all(estimator.noise(problem.view(estimator).template), 0, 7)
    reference = {g: torch.randn(p.numel(), dtype=F64) for g, p in problem.parameters().items()}
    whole = problem.chunk_stats(estimator, None, noise, "vectorized", reference)
    monkeypatch.setattr(module, "_ROWS", 2 * x.shape[0])  # pieces of 2 draws
    pieces = problem.chunk_stats(estimator, None, noise, "vectorized", reference)
    for group in whole:
        for field in ("total", "sq", "dot"):
            torch.testing.assert_close(getattr(whole[group], field), getattr(pieces[group], field))


def test_exact_gradient_equals_enumeration_over_the_whole_batch():
    """Per-image enumeration (K^L per image) equals the core's enumeration over all B·L variables."""
    model, x = tiny(latents=2, categories=3, batch=2)
    problem = VAEProblem(model, x, kl=False)
    mine = problem.exact_gradient()
    core = enumerate_gradient(problem)  # 3^(2·2) joint configurations; sees only the logits
    torch.testing.assert_close(mine["logits"], core["logits"])
    torch.testing.assert_close(mine["encoder"], problem.encoder_map.vjp(mine["logits"].reshape(2, -1)))


def test_kl_gradient_is_added_exactly():
    model, x = tiny(latents=2, categories=3, batch=2)
    with_kl, without = VAEProblem(model, x).exact_gradient(), VAEProblem(model, x, kl=False).exact_gradient()
    logits = model.logits(x).detach().requires_grad_(True)
    (kl_grad,) = torch.autograd.grad(model.kl(logits).mean(), [logits])
    torch.testing.assert_close(with_kl["logits"] - without["logits"], kl_grad.reshape(-1))


@pytest.mark.parametrize("latent, latents, categories", [("categorical", 3, 10), ("bernoulli", 8, 2)])
def test_reinforce_reference_agrees_with_the_exact_one(latent, latents, categories):
    """3 × 10 latents (1,000 configurations per image): REINFORCE-LOO within 4 of its standard
    errors of the exact gradient, per group. False alarm ≤ 6.3e-5 per group (Székely–Bakirov)."""
    model, x = tiny(latent, latents, categories, batch=3, grey=True)
    problem = VAEProblem(model, x)
    exact = resolve_reference(problem, "auto", 40, 0)
    assert exact.kind == "exact"
    mc = resolve_reference(problem, "reinforce", 20_000, seed=3)
    assert mc.kind == "reinforce" and mc.samples == 20_000
    for group in ("encoder", "logits"):
        err = float((mc.gradient[group] - exact.gradient[group]).norm())
        assert 0 < mc.stderr(group) < 0.2 * float(exact.gradient[group].norm())
        assert err <= 4 * mc.stderr(group), (group, err, mc.stderr(group))


def test_reinforce_reference_error_shrinks_like_one_over_root_n():
    model, x = tiny(batch=2)
    problem = VAEProblem(model, x)
    small = resolve_reference(problem, "reinforce", 1_000, 1).stderr("encoder")
    large = resolve_reference(problem, "reinforce", 16_000, 1).stderr("encoder")
    assert 2.8 < small / large < 5.7  # √16 = 4; each stderr is estimated from 20 groups


def _measured(spec, samples, seed=5):
    model, x = tiny(batch=2, grey=True)
    problem = VAEProblem(model, x)
    reference = resolve_reference(problem, "exact", 40, 0)
    return measure(problem, estimators.build(spec), reference.gradient, MeasureConfig(samples, seed),
                   reference.variance)


@pytest.mark.parametrize("spec", ["rloo(m=4)", "reinforce"])
def test_unbiased_estimators_match_the_exact_vae_gradient(spec):
    """Bias within BIAS_FLOORS noise floors in both groups: false alarm ≤ 6.3e-5 each."""
    result = _measured(spec, 8_000)
    for group, summary in result.groups.items():
        m = summary.metrics
        assert m["bias_norm"].value <= BIAS_FLOORS * m["bias_noise_floor"].value, (group, m["bias_norm"])


def test_straight_through_bias_is_detected_on_the_vae():
    """The check has power: STGS's bias stands far above its noise floor on this problem."""
    result = _measured("stgs", 8_000)
    for group, summary in result.groups.items():
        m = summary.metrics
        assert m["bias_norm"].value > BIAS_FLOORS * m["bias_noise_floor"].value, group
