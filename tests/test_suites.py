"""Suites of runs (gradbench run --suite): the TOML format, its checks, and the built-in ci suite."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from gradbench.cli import app
from gradbench.errors import UserError
from gradbench.registry import compatibility, estimators, tasks
from gradbench.sweep.grid import expand_estimators
from gradbench.sweep.suites import load_suite, read_suites

runner = CliRunner()

SMALL = """
[small]
description = "two runs"
samples = 300
device = "cpu"
warmup = 10

[[small.runs]]
task = "toy-quadratic"
estimators = ["stgs", "gst(gap=1.2)"]
seed = 3

[[small.runs]]
task = "toy-bernoulli(dim=4)"
estimators = "rloo"
"""


def test_ci_suite_covers_every_registered_estimator():
    suite = load_suite("ci")
    covered = {e.split("(")[0] for run in suite.runs for e in run.estimators}
    missing = sorted(set(estimators.names()) - covered)
    assert not missing, (f"the ci suite does not run {missing}: add a task they fit to bench/sweep/suites.toml, then "
                         "regenerate the baseline (docs/ci.md)")
    for run in suite.runs:
        assert run.options.device == "cpu" and run.options.dtype == "float64" and run.options.seed == 0


def test_star_expands_to_every_fitting_estimator_in_order():
    fitting = [n for n in estimators.names() if compatibility(estimators.info(n), tasks.info("toy-quadratic"))[0]]
    assert expand_estimators("toy-quadratic", ["*"]) == fitting
    expanded = expand_estimators("toy-quadratic", ["gst(gap='p')", "*", "stgs"])
    assert expanded[0] == "gst(gap='p')" and expanded[-1] == "stgs" and expanded.count("stgs") == 1
    assert len(expanded) == len(fitting) + 1


def test_suite_values_and_command_line_overrides(tmp_path):
    path = tmp_path / "suites.toml"
    path.write_text(SMALL)
    suite = load_suite("small", path, "out")
    first, second = suite.runs
    assert (first.task, first.estimators, first.options.seed, first.options.samples) == (
        "toy-quadratic", ("stgs", "gst(gap=1.2)"), 3, 300)
    assert (second.estimators, second.options.seed, second.options.warmup) == (("rloo",), 0, 10)
    out = tmp_path / "res"
    result = runner.invoke(app, ["run", "--suite", "small", "--suite-file", str(path), "--samples", "200",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert df["run_id"].nunique() == 2 and set(df["n_estimates"]) == {200}  # --samples overrides the file
    assert dict(df.groupby("task")["seed"].first()) == {"toy-quadratic": 3, "toy-bernoulli": 0}


BAD_SUITES = [
    ("[s]\nsample = 3\n[[s.runs]]\ntask='toy-quadratic'\nestimators=['gst']\n", "unknown key 'sample'; did you mean 'samples'"),
    ("[s]\n[[s.runs]]\ntask='toy-quadratic'\nestimators=['gst']\nseed=[0, 1]\n", "seed is a list"),
    ("[s]\n[[s.runs]]\ntask='toy-quadratic'\nestimators=['gst']\nsamples='many'\n", "samples must be an integer"),
    ("[s]\n[[s.runs]]\nestimators=['gst']\n", "give the task as a spec string"),
    ("[s]\n[[s.runs]]\ntask='toy-quadratic'\n", "give estimators as a list"),
    ("[s]\ndescription = 'none'\n", "suite 's' has no runs"),
    ("[s\n", "cannot read the suites file"),
]


@pytest.mark.parametrize("text, message", BAD_SUITES)
def test_bad_suites_are_rejected_in_one_line(tmp_path, text, message):
    path = tmp_path / "suites.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_suite("s", path)


def test_bad_suite_commands_write_nothing(tmp_path):
    path = tmp_path / "suites.toml"
    path.write_text(SMALL.replace('"rloo"', '"rlo"'))
    out = tmp_path / "res"
    cases = [
        (["--suite", "smal", "--suite-file", str(path)], "no suite 'smal'"),
        (["--suite", "small", "--suite-file", str(path)], "unknown estimator 'rlo'"),  # checked before any run
        (["--suite", "ci", "--task", "toy-quadratic"], "--suite names its own tasks"),
        (["--suite", "ci", "--suite-file", str(tmp_path / "none.toml")], "no suites file"),
        ([], "Missing option '--task': give a task spec (or --suite NAME)"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["run", *args, "--out", str(out)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_builtin_suites_file_is_package_data():
    assert "ci" in read_suites()


def test_committed_ci_baseline_matches_the_ci_suite():
    """The baseline .ci/run compares against must hold every configuration of the ci suite, at the
    registered versions; after adding or changing an estimator or task, regenerate it (docs/ci.md)."""
    from pathlib import Path

    from gradbench.store import read_results

    baseline = read_results(Path(__file__).parent / "baselines" / "ci")
    measured = set(zip(baseline["task"], baseline["estimator_label"], baseline["estimator_version"],
                       baseline["task_version"]))
    expected = set()
    for run in load_suite("ci").runs:
        task = tasks.validate(run.task)
        for spec in run.estimators:
            est = estimators.build(spec)
            expected.add((task.name, est.label, est.version, tasks.info(task.name).version))
    regenerate = "regenerate it: gradbench regenerate --only baseline"
    assert expected <= measured, f"missing from the baseline: {sorted(expected - measured)}; {regenerate}"
    assert measured <= expected, f"not in the ci suite any more: {sorted(measured - expected)}; {regenerate}"
    assert set(baseline["status"]) == {"ok"} and set(baseline["device"]) == {"cpu"}
