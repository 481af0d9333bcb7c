"""The listops task: Tree-LSTM merge decisions, their exact and REINFORCE references, training, CLI.

Statistical checks use fixed seeds and BIAS_FLOORS noise floors (false alarm ≤ 6.3e-5 each).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import BIAS_FLOORS
from gradbench.cli import app
from gradbench.families.categorical import one_hot_argmax
from gradbench.noise import NoiseSource
from gradbench.references import reinforce_reference, resolve_reference
from gradbench.registry import compatibility, estimators, tasks
from gradbench.engine import MeasureConfig, View, measure, per_draw_gradients
from gradbench.families.sequence import count_sequences
from gradbench.tasks.listops import data
from gradbench.tasks.listops.model import Batch, MergeProcess, init_weights, merge_mask
from gradbench.tasks.listops.problem import ListOpsProblem

runner = CliRunner()
BENCHMARKS = Path(__file__).parent / "benchmarks"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tiny_problem(dim=8, sentences=3, max_length=6, seed=1) -> ListOpsProblem:
    """Random weights with a spread-out merge scorer, short generated sentences (float64)."""
    weights = init_weights(dim, torch.Generator().manual_seed(0), torch.float64, query_std=1.0)
    return ListOpsProblem(weights, Batch.of(data.generate(sentences, seed, max_length=max_length)))


def test_a_sentence_of_l_leaves_has_l_minus_1_factorial_merge_orders():
    lengths = torch.tensor([4, 7, 5, 1, 2])
    assert count_sequences(merge_mask(lengths)) == [math.factorial(max(n - 1, 0)) for n in lengths.tolist()]


def test_fast_greedy_evaluation_builds_the_argmax_trees():
    """Incremental candidates in greedy() = argmax choices through propose(), long sentences included."""
    official = data.read_tsv(data.official_validation_path())
    ordered = sorted((e for e in official if len(e.tokens) <= 250), key=lambda e: len(e.tokens))
    chosen = ordered[::120] + ordered[-1:]
    weights = init_weights(6, torch.Generator().manual_seed(3), torch.float64, query_std=1.0)
    process = MergeProcess({k: v[None] for k, v in weights.items()}, Batch.of(chosen))
    with torch.no_grad():
        carry = process.start()
        for t in range(process.mask.shape[1]):
            logits, advance = process.propose(carry, t)
            carry = advance(one_hot_argmax(logits.masked_fill(~process.mask[:, t], float("-inf"))))
        torch.testing.assert_close(process.greedy(), process.logits(carry), rtol=1e-9, atol=1e-12)


def test_exact_and_reinforce_references_agree_on_short_sentences():
    """Enumerating every merge order = REINFORCE with log p(tree) = Σ log p(merge choices), within its error."""
    problem = tiny_problem()
    exact = resolve_reference(problem, "auto", 0, 0)
    assert exact.kind == "exact"
    mc = reinforce_reference(problem, 10_000, seed=2)
    for group in ("query", "model"):
        gap = float((mc.gradient[group] - exact.gradient[group]).norm())
        assert gap <= BIAS_FLOORS * mc.stderr(group), group
        assert float(exact.gradient[group].norm()) > 10 * mc.stderr(group), group  # the check has power


def test_query_group_is_the_model_groups_query_slice():
    problem = tiny_problem()
    stgs = estimators.build("gst")
    view = View(problem, stgs)
    noise = NoiseSource(0, "test", view.template.params.device).draw_all(stgs.noise(view.template), 0, 6)
    grads = per_draw_gradients(view, stgs, None, noise)
    offset = 0
    for name, shape in problem.shapes.items():
        size = math.prod(shape)
        if name == "query":
            torch.testing.assert_close(grads["query"], grads["model"][:, offset : offset + size], rtol=0, atol=0)
        offset += size
    assert grads["query"].abs().sum() > 0


@pytest.mark.parametrize("spec", ["stgs", "gst", "gr-mc(k=4)", "rloo"])
def test_engines_agree_on_listops(spec):
    problem, estimator = tiny_problem(), estimators.build(spec)
    view = View(problem, estimator)
    noise = NoiseSource(1, "test", view.template.params.device).draw_all(estimator.noise(view.template), 0, 4)
    fast = per_draw_gradients(view, estimator, None, noise, "vectorized")
    slow = per_draw_gradients(view, estimator, None, noise, "loop")
    for group in fast:
        torch.testing.assert_close(fast[group], slow[group], rtol=1e-10, atol=1e-12)


def test_reinforce_on_whole_trees_is_unbiased():
    problem = tiny_problem()
    reference = resolve_reference(problem, "exact", 0, 0)
    result = measure(problem, estimators.build("rloo(m=2)"), reference.gradient, MeasureConfig(4000, 5))
    for group, summary in result.groups.items():
        assert summary.metrics["bias_norm"].value <= BIAS_FLOORS * summary.metrics["bias_noise_floor"].value, group


def test_every_categorical_estimator_fits_or_says_why():
    listops = tasks.info("listops")
    for name in estimators.names():
        ok, detail = compatibility(estimators.info(name), listops)
        families = estimators.info(name).capabilities["families"]
        if "categorical" in families or "*" in families:
            assert ok or detail, name
    for name in ("stgs", "gr-mc", "gst", "st", "gumbel-softmax", "reinforce", "reinforce-ema", "rloo"):
        assert compatibility(estimators.info(name), listops)[0], name


# --- training through the command line ---------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listops")
    examples = data.generate(96, seed=4, max_length=30)
    data.write_tsv(folder / "train.tsv", examples[:64])
    data.write_tsv(folder / "valid.tsv", examples[64:80])
    data.write_tsv(folder / "test.tsv", examples[80:])
    return folder


def _train(out, data_dir, *specs):
    task = (f"listops(dim=6, batch_size=16, epochs=1, checkpoints=2, data_dir='{data_dir}', "
            "measure_sentences=3, measure_length=6)")
    chosen = [a for spec in specs for a in ("-e", spec)]
    return invoke("run", "--task", task, *chosen, "--samples", 20, "--seed", 3, "--out", out)


def test_training_run_records_curves_and_measurements(tmp_path, data_dir):
    result = _train(tmp_path, data_dir, "stgs(tau=0.5)", "rloo(m=2)")
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path)
    curves = df[df.param_group == ""]
    assert {"train/loss", "train/accuracy", "valid/accuracy", "test/accuracy", "lr"} <= set(curves.metric)
    assert sorted(curves.step.unique()) == [2, 4]
    assert curves.value.between(0, 1).where(curves.metric.str.endswith("accuracy"), True).all()
    grads = df[df.param_group != ""]
    assert set(grads.param_group) == {"query", "model"} and set(grads.step) == {0, 4}
    assert set(grads.reference) == {"exact"} and (grads.status == "ok").all()
    assert set(grads.family) == {"categorical", "categorical-sequence"}  # stgs step by step, rloo whole trees
    assert (grads[grads.metric == "variance"].value > 0).all()
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "_run.json").read_text())["status"] == "complete"
    assert len(list((run_dir / "_checkpoints").iterdir())) == 2
    table = _table_module()
    accuracy, gradients = table.accuracy_table(table.load(tmp_path)), table.gradient_table(table.load(tmp_path), "0", "query")
    assert sorted(accuracy.index.get_level_values("name")) == ["rloo", "stgs"]
    assert accuracy["valid_mean"].between(0, 1).all() and (accuracy["seeds"] == 1).all()
    assert (gradients["seeds"] == 1).all() and set(gradients["reference"]) == {"exact"}
    assert "| tau | name |" in table.markdown(accuracy)


def _table_module():
    spec = importlib.util.spec_from_file_location("listops_table", BENCHMARKS / "listops_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_is_reproducible(tmp_path, data_dir):
    for _ in range(2):
        assert _train(tmp_path, data_dir, "gst", "reinforce-ema").exit_code == 0
    df = pd.read_parquet(tmp_path)
    df = df[~df.metric.isin(["train/seconds", "seconds_per_estimate", "work_normalized_variance"])]
    a, b = (g.sort_values(["estimator_label", "step", "param_group", "metric"]).value.to_numpy()
            for _, g in df.groupby("run_id"))
    assert (a == b).all()


@pytest.mark.parametrize("task, message", [
    ("listops(data_dir='/no/such/folder')", "is not a folder"),
    ("listops(preset='gpu')", "did you mean"),
    ("listops(measure='some')", "ends"),
])
def test_bad_task_settings_fail_in_one_line(tmp_path, task, message):
    result = invoke("run", "--task", task, "-e", "stgs", "--out", tmp_path)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())


# --- gradbench data listops -----------------------------------------------------------


def test_data_command_generates_and_checks(tmp_path):
    out = tmp_path / "gen.tsv"
    result = invoke("data", "listops", "--out", out, "--n", 30, "--seed", 2)
    assert result.exit_code == 0, result.output
    assert [e.expression for e in data.read_tsv(out)] == [e.expression for e in data.generate(30, 2)]
    assert invoke("data", "listops", "--check", out).exit_code == 0
    checked = invoke("data", "listops", "--check", data.official_validation_path())
    assert checked.exit_code == 0 and "1000 examples, 0 mismatched" in checked.output


def test_data_check_reports_mismatches_with_exit_1(tmp_path):
    path = tmp_path / "wrong.tsv"
    path.write_text("3\t( ( ( [MAX 1 ) 5 ) ] )\n5\t( ( ( [MAX 1 ) 5 ) ] )\n")
    result = invoke("data", "listops", "--check", path)
    assert result.exit_code == 1
    assert "wrong.tsv:1: label 3, value 5" in result.output and "1 mismatched" in result.output


@pytest.mark.parametrize("args, message", [
    ((), "exactly one of"),
    (("--out", "a.tsv", "--check", "b.tsv"), "exactly one of"),
    (("--check", "missing.tsv"), "not found"),
    (("--out", "x.tsv", "--max-args", 1), "max_args"),
    (("--out", "x.tsv", "--n", 0), "--n"),
])
def test_data_command_bad_input_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("data", "listops", *args)
    assert result.exit_code == 2 and message in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cpu_training_learns_far_above_chance(tmp_path):
    """A quarter of the CPU preset's budget (188 steps of STGS) already doubles chance on the official file.

    Threshold 0.2 vs about 0.27 reached: 5 binomial standard errors over 1,000 sentences.
    """
    task = "listops(train_size=6000, epochs=1, checkpoints=1, measure='none')"
    result = invoke("run", "--task", task, "-e", "stgs", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path)
    assert float(df.loc[df.metric == "valid/accuracy", "value"].iloc[-1]) > 0.2
