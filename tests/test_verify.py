"""`gradbench verify`: a subtly biased plugin is caught, an honest one passes, broken claims are named.

Statistical policy: verify's own test runs at family-wise false-alarm rate alpha = 0.01
(Holm over the tasks); with the fixed seed 0 each outcome here is deterministic. The
biased plugin's relative bias is 1/m = 25% (its baseline includes the sample's own
value, scaling the RLOO estimate by (m − 1)/m), well above the quick budget's
detectable relative bias on toy-quadratic and toy-latent (about 0.12 and 0.07).
"""

import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from gradbench import store
from gradbench.cli import app
from gradbench.registry import estimators

runner = CliRunner()
TASKS = ("--task", "toy-quadratic", "--task", "toy-latent")

PLUGIN = '''
from dataclasses import dataclass

from gradbench import Estimator, NoiseSpec, Surrogate, param
from gradbench.capabilities import FromParam


def _estimate(dist, f, noise, m, leave_one_out):
    x = dist.sample(noise["samples"])  # [m, n, ...]
    fx = f(x, lead=1)  # [m, n, *units]
    if leave_one_out:
        baseline = (fx.sum(0, keepdim=True) - fx) / (m - 1)
    else:  # the subtle bug: the sample's own value is part of its baseline
        baseline = fx.mean(0, keepdim=True)
    logp = dist.log_prob_units(x)
    value = (fx + (fx - baseline).detach() * (logp - logp.detach())).mean(0)
    return Surrogate(value.reshape(value.shape[0], -1).sum(1))


@dataclass(frozen=True)
class SelfBaseline(Estimator):
    """RLOO whose baseline is the mean of all m values, own one included; declares itself unbiased."""

    name = "self-baseline"
    unbiased = True
    families = ("*",)
    evaluations = FromParam("m")
    m: int = param(4, "draws per estimate", ge=2)

    def noise(self, dist):
        one = dist.sample_noise()
        return {"samples": NoiseSpec(one.kind, (self.m, *one.shape))}

    def surrogate(self, dist, f, noise, state):
        return _estimate(dist, f, noise, self.m, leave_one_out=False)


@dataclass(frozen=True)
class Honest(SelfBaseline):
    """Leave-one-out done right."""

    name = "honest-loo"

    def surrogate(self, dist, f, noise, state):
        return _estimate(dist, f, noise, self.m, leave_one_out=True)


@dataclass(frozen=True)
class Miscounted(Honest):
    """Honest, but declares one evaluation of f where it makes m."""

    name = "miscounted"
    evaluations = 1


@dataclass(frozen=True)
class Broken(Honest):
    """Fails on every task."""

    name = "broken"

    def surrogate(self, dist, f, noise, state):
        raise RuntimeError("deliberately broken")


@dataclass(frozen=True)
class SecretlyRelaxed(Estimator):
    """Declares relaxed_f = False, then evaluates f at softmax(logits)."""

    name = "secretly-relaxed"
    unbiased = False
    differentiable_f = True

    def surrogate(self, dist, f, noise, state):
        y = dist.probs.unsqueeze(0).expand(1, *dist.probs.shape)[0]
        value = f(y)
        return Surrogate(value.reshape(value.shape[0], -1).sum(1))
'''


@pytest.fixture(autouse=True)
def _registry_as_it_was():
    """Classes verified from a file are registered in-process; later tests must not see them."""
    estimators.names()  # loaded before the snapshot
    saved = dict(estimators._entries)
    yield
    estimators._entries.clear()
    estimators._entries.update(saved)


def _plugin(tmp_path):
    path = tmp_path / "my_estimators.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return path


def invoke(*args):
    return runner.invoke(app, ["verify", *[str(a) for a in args]])


def test_subtly_biased_plugin_is_caught_naming_the_tasks(tmp_path):
    out = tmp_path / "res"
    result = invoke(f"{_plugin(tmp_path)}:SelfBaseline", *TASKS, "--against", "reinforce", "--out", out)
    assert result.exit_code == 1, result.output
    contradicted = [line for line in result.output.splitlines() if "contradicted:" in line]
    assert any(line.strip().startswith("contradicted: toy-quadratic [logits]: declared unbiased") for line in contradicted)
    assert any("toy-latent [logits]: declared unbiased" in line for line in contradicted)
    (run_dir,) = out.iterdir()
    card = (run_dir / "_verdict.md").read_text()
    assert "declaration(s) contradicted" in card and "toy-quadratic" in card
    assert (run_dir / "_verdict.html").read_text().startswith("<!DOCTYPE html>")
    # The rows are a normal run's: the usual schema, the estimator and its baseline on each task.
    df = pd.read_parquet(out)
    assert list(df.columns) == store.SCHEMA.names
    assert set(df["estimator"]) == {"self-baseline", "reinforce"} and set(df["task"]) == {"toy-quadratic", "toy-latent"}
    rel = df[(df.estimator == "self-baseline") & (df.metric == "relative_bias")].set_index("task")["value"]
    assert ((rel - 0.25).abs() < 0.1).all()  # the bias it has: (m − 1)/m of the gradient, relative bias 1/m


def test_honest_plugin_passes(tmp_path):
    result = invoke(f"{_plugin(tmp_path)}:Honest", *TASKS, "--against", "reinforce", "--out", tmp_path / "res")
    assert result.exit_code == 0, result.output
    assert "honest-loo: every declaration holds" in result.output


def test_wrong_evaluation_count_and_relaxed_points_are_named(tmp_path):
    path = _plugin(tmp_path)
    result = invoke(f"{path}:Miscounted", "--task", "toy-quadratic", "--against", "reinforce", "--out", tmp_path / "a")
    assert result.exit_code == 1
    assert "toy-quadratic [logits]: declares 1 evaluations of f per estimate, counted 4" in result.output
    result = invoke(f"{path}:SecretlyRelaxed", "--task", "toy-quadratic", "--against", "reinforce",
                    "--out", tmp_path / "b")
    assert result.exit_code == 1
    assert "declares relaxed_f = False, but evaluated f at non-discrete points" in result.output
    result = invoke(f"{path}:Broken", "--task", "toy-quadratic", "--against", "reinforce", "--out", tmp_path / "c")
    assert result.exit_code == 1
    assert "toy-quadratic [logits]: the measurement failed: RuntimeError: deliberately broken" in result.output


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "res"
    for args, expected in [
        (("rlooo",), "did you mean 'rloo'"),
        ((f"{tmp_path}/missing.py:X",), "no file"),
        ((f"{_plugin(tmp_path)}:SelfBaselin",), "did you mean 'SelfBaseline'"),
        (("rloo", "--budget", "huge"), "unknown budget"),
        (("rloo", "--task", "toy-quadratc"), "did you mean 'toy-quadratic'"),
        (("rloo", "--task", "mnist-vae"), "not a fixed task with an exact gradient"),
        (("rloo", "--against", "nope"), "unknown estimator 'nope'"),
        (("arm", "--task", "toy-quadratic"), "fits no fixed task"),
    ]:
        result = invoke(*args, "--out", out)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], (args, result.output)
    assert not out.exists()


def test_built_in_verdicts_agree_with_declarations(tmp_path):
    """Three built-ins, one per kind of declaration: unbiased, biased and relaxed, m evaluations."""
    for spec in ("rloo(m=3)", "gumbel-softmax", "disarm"):
        result = invoke(spec, "--task", "toy-bernoulli", "--task", "toy-quadratic", "--against", "reinforce",
                        "--out", tmp_path / "res")
        assert result.exit_code == 0, result.output


def test_verify_rows_are_gradbench_runs_numbers(tmp_path):
    """Same seed, same bits: verify measures as `gradbench run` does with its budget's options."""
    from gradbench.options import RunOptions
    from gradbench.run import execute, prepare
    from gradbench.verify import BUDGETS

    result = invoke("reinforce-ema", "--task", "toy-latent", "--against", "rloo(m=2)", "--seed", 3,
                    "--out", tmp_path / "v")
    assert result.exit_code == 0, result.output
    quick = BUDGETS["quick"]
    run = execute(prepare("toy-latent", ["reinforce-ema", "rloo(m=2)"],
                          RunOptions(samples=quick.samples, seed=3, warmup=quick.warmup, out=str(tmp_path / "r"))))
    timing = ["seconds_per_estimate", "work_normalized_variance"]
    key = ["estimator_label", "param_group", "metric"]
    v = pd.read_parquet(tmp_path / "v").set_index(key)
    r = pd.DataFrame(run.rows).set_index(key)
    r = r[~r.index.get_level_values("metric").isin(timing)]
    pd.testing.assert_frame_equal(v.loc[r.index, ["value", "ci_low", "ci_high", "n_estimates", "warmup"]],
                                  r[["value", "ci_low", "ci_high", "n_estimates", "warmup"]], check_exact=True)
