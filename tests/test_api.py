"""gradbench.measure_gradients: the CLI's numbers on a plain objective, a user's encoder, one-line errors.

Statistical policy: bias within BIAS_FLOORS noise floors (false-alarm rate ≤ 6.3e-5 per
check, see conftest), fixed seeds.
"""

import math
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import gradbench
from gradbench import store
from gradbench.errors import UserError
from gradbench.options import RunOptions
from gradbench.run import execute, prepare
from gradbench.tasks.toy import DEFAULT_LOGITS, DEFAULT_TARGET

from conftest import BIAS_FLOORS

KEY = ["estimator_label", "param_group", "metric"]
ESTIMATORS = ["reinforce", "rloo(m=3)", "gst(gap=1.2)"]


def _numbers(df: pd.DataFrame) -> pd.DataFrame:
    df = df[~df["metric"].isin({"seconds_per_estimate", "work_normalized_variance"})]
    return df.set_index(KEY)[["value", "ci_low", "ci_high", "n_estimates", "status"]].sort_index()


def test_same_seed_same_bits_as_gradbench_run_on_the_equivalent_built_in_task(tmp_path):
    """toy-quadratic's objective and logits through the API give the CLI's numbers to the last bit."""
    logits = torch.tensor(DEFAULT_LOGITS, dtype=torch.float64)
    target = torch.tensor(DEFAULT_TARGET, dtype=torch.float64)
    api = gradbench.measure_gradients(ESTIMATORS, lambda x: ((x - target) ** 2).sum(-1), logits, samples=3000,
                                      seed=7)
    cli = execute(prepare("toy-quadratic", ESTIMATORS, RunOptions(samples=3000, seed=7, out=str(tmp_path))))
    a, c = _numbers(api), _numbers(pd.DataFrame(cli.rows))
    assert list(api.columns) == store.SCHEMA.names and a.index.equals(c.index)
    pd.testing.assert_frame_equal(a, c, check_exact=True)


def test_bernoulli_family_matches_toy_bernoulli_bit_for_bit(tmp_path):
    logits = torch.zeros(10, dtype=torch.float64)
    api = gradbench.measure_gradients(["reinforce", "disarm", "stgs"], lambda b: ((b - 0.499) ** 2).sum(-1), logits,
                                      family="bernoulli", samples=2000, out=str(tmp_path / "api"))
    cli = execute(prepare("toy-bernoulli", ["reinforce", "disarm", "stgs"], RunOptions(samples=2000, out=str(tmp_path))))
    a, c = _numbers(api), _numbers(pd.DataFrame(cli.rows))
    # The estimates are the same bits; the reference is not quite: toy-bernoulli computes it per variable in
    # closed form, the API enumerates the 2^10 joint outcomes, so metrics against it agree to rounding.
    free = a.index.get_level_values("metric").isin(["variance", "variance_per_element", "snr"])
    pd.testing.assert_frame_equal(a[free], c[free], check_exact=True)
    pd.testing.assert_frame_equal(a[~free], c[~free], check_exact=False, rtol=1e-9, atol=1e-15)
    written = pd.read_parquet(tmp_path / "api")  # out=: a normal run folder
    assert len(written) == len(api) and set(written["task"]) == {"user-objective"}


def test_estimators_in_one_call_share_noise():
    """Adding estimators to a call changes nobody else's numbers (common random numbers)."""
    logits = torch.tensor([[0.3, -0.2, 0.5], [0.0, 1.0, -1.0]], dtype=torch.float64)
    f = lambda x: (x * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum((-1, -2)) ** 2  # noqa: E731
    alone = gradbench.measure_gradients("reinforce", f, logits, samples=1000)
    together = gradbench.measure_gradients(["stgs", "reinforce", "rloo"], f, logits, samples=1000)
    pd.testing.assert_frame_equal(_numbers(alone), _numbers(together[together.estimator == "reinforce"]),
                                  check_exact=True)
    # An Estimator instance is measured as its spec is.
    from gradbench.registry import estimators

    instance = gradbench.measure_gradients([estimators.build("rloo(m=3)")], f, logits, samples=1000)
    by_name = gradbench.measure_gradients("rloo(m=3)", f, logits, samples=1000)
    pd.testing.assert_frame_equal(_numbers(instance), _numbers(by_name), check_exact=True)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2 * 3)).double()

    def forward(self, x):  # [B, 3] -> logits [B, 2, 3]: two latents of K = 3 per input
        return self.net(x).reshape(x.shape[0], 2, 3)


def test_encoder_gradient_is_exact_and_unbiased_estimators_match_it():
    """With a user's nn.Module: the exact reference is autograd of the enumerated expectation, by hand here."""
    encoder, inputs = Encoder(), torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = lambda z: ((z * weights).sum((-1, -2)) - 0.3) ** 2  # noqa: E731  z [N, B, 2, 3] -> [N, B]
    df = gradbench.measure_gradients(["rloo", "reinforce", "stgs"], f, encoder=encoder, inputs=inputs, samples=4000)
    assert set(df["param_group"]) == {"encoder"} and (df["reference"] == "exact").all()
    # By hand: Σ over the 3^4 joint outcomes of p(z) f(z), differentiated through the encoder.
    logp = torch.log_softmax(encoder(inputs), -1)  # [B, 2, 3]
    grid = torch.cartesian_prod(*[torch.arange(3)] * 4).reshape(-1, 2, 2)  # [81, B, 2]
    z = torch.nn.functional.one_hot(grid, 3).double()  # [81, B, 2, 3]
    expectation = ((z * logp).sum((-1, -2, -3)).exp() * f(z).sum(-1)).sum()
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(expectation, list(encoder.parameters()))])
    rows = df.set_index(["estimator_label", "metric"])["value"]
    assert math.isclose(rows["rloo", "reference_norm"], float(exact.norm()), rel_tol=1e-12)
    for label in ("rloo", "reinforce"):
        assert rows[label, "bias_norm"] <= BIAS_FLOORS * rows[label, "bias_noise_floor"]
    # IndeCateR enumerates each variable given the others: unbiased, and its K·D + 1 evaluations fit the chunk limit.
    indecater = gradbench.measure_gradients("indecater", f, encoder=encoder, inputs=inputs, samples=500)
    ind = indecater.set_index("metric")["value"]
    assert ind["bias_norm"] <= BIAS_FLOORS * ind["bias_noise_floor"] + 1e-9 * ind["reference_norm"]
    assert rows["stgs", "bias_norm"] > BIAS_FLOORS * rows["stgs", "bias_noise_floor"]  # biased, and visibly so


def test_encoder_vectorised_engine_equals_the_loop_engine():
    encoder, inputs = Encoder(), torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = lambda z: z[..., 0].sum((-1, -2))  # noqa: E731
    kw = dict(encoder=encoder, inputs=inputs, samples=200)
    vec = gradbench.measure_gradients(["reinforce", "gst"], f, **kw)
    loop = gradbench.measure_gradients(["reinforce", "gst"], f, engine="loop", **kw)
    a, b = _numbers(vec), _numbers(loop)
    assert ((a["value"] - b["value"]).abs() <= 1e-9 * (1 + b["value"].abs())).all()


@pytest.mark.parametrize("call, expected", [
    (dict(objective="not callable"), "objective must be a callable"),
    (dict(objective=lambda x: x), "objective returned (2, 4, 3)"),
    (dict(objective=lambda x: x.sum(-1).sum(-1)[:1]), "it must return one value per sample"),
    (dict(objective=lambda x: x.sum((-1, -2)) * float("nan")), "objective returned NaN or inf"),
    (dict(logits=torch.tensor([[0.0, float("nan"), 1.0]] * 4, dtype=torch.float64)), "logits holds NaN or inf"),
    (dict(logits=torch.zeros(4, 1, dtype=torch.float64)), "K ≥ 2 categories"),
    (dict(logits=torch.zeros(4, 3, dtype=torch.long)), "floating-point tensor"),
    (dict(encoder=nn.Linear(2, 3)), "not both or neither"),
    (dict(estimators=["arm"]), "arm handles bernoulli variables, not categorical"),
    (dict(estimators=["gst"], relaxed=False, differentiable=False), "needs a differentiable f"),
    (dict(estimators=["vimco"]), "needs a task that offers importance_weights"),
    (dict(estimators=["rlooo"]), "did you mean 'rloo'"),
    (dict(samples=1), "--samples must be at least 2"),
])
def test_bad_input_is_one_line_user_error(call, expected):
    kwargs = dict(estimators=["reinforce"], objective=lambda x: x.sum((-1, -2)), logits=torch.zeros(4, 3, dtype=torch.float64))
    kwargs.update(call)
    with pytest.raises(UserError) as info:
        gradbench.measure_gradients(kwargs.pop("estimators"), kwargs.pop("objective"), **kwargs)
    message = str(info.value)
    assert expected in message and "\n" not in message, message


def test_encoder_errors():
    with pytest.raises(UserError, match="encoder needs its inputs"):
        gradbench.measure_gradients("reinforce", lambda z: z.sum((-1, -2)), encoder=Encoder())
    with pytest.raises(UserError, match=r"encoder\(inputs\) failed: RuntimeError"):
        gradbench.measure_gradients("reinforce", lambda z: z.sum((-1, -2)), encoder=Encoder(), inputs=torch.zeros(2, 7))


def test_own_model_example_runs_and_compares_three_estimators():
    path = Path(__file__).resolve().parents[1] / "examples" / "own_model.py"
    out = subprocess.run([sys.executable, str(path), "--samples", "2000"], capture_output=True, text=True, check=True)
    assert "reference: exact" in out.stdout
    for label in ("rloo", "stgs", "gst"):
        assert any(line.startswith(label) for line in out.stdout.splitlines()), out.stdout
    df = runpy.run_path(str(path))["main"](samples=2000)
    rows = df.set_index(["estimator_label", "metric"])["value"]
    assert rows["rloo", "bias_norm"] <= BIAS_FLOORS * rows["rloo", "bias_noise_floor"]  # unbiased on the user's model
    assert rows["gst", "relative_bias"] > 0.05 and rows["stgs", "relative_bias"] > 0.05  # relaxed ones are biased here


def test_reinforce_loo_reference_with_its_error_bar_when_the_support_is_too_large():
    logits = torch.zeros(12, 4, dtype=torch.float64)  # 4^12 = 16.8M joint outcomes: no enumeration
    f = lambda x: (x[..., 0].sum(-1) - 3.0) ** 2  # noqa: E731
    df = gradbench.measure_gradients("rloo", f, logits, samples=500, reference_samples=20_000)
    rows = df.set_index("metric")["value"]
    assert (df["reference"] == "reinforce").all() and (df["reference_samples"] == 20_000).all()
    assert rows["reference_stderr"] > 0
    # The reference's own noise widens the bias interval: floor² = variance/S + stderr².
    assert math.isclose(rows["bias_noise_floor"] ** 2, rows["variance"] / 500 + rows["reference_stderr"] ** 2,
                        rel_tol=1e-9)
    assert rows["bias_norm"] <= BIAS_FLOORS * rows["bias_noise_floor"]
