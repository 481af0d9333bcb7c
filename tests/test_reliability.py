"""Bad input and faults (issue 16): one class of failure per test, each once a traceback, a silent
wrong answer or a half-written file. The promise: one ``error:`` line, a non-zero exit, nothing
written (no folder, no temporary file), and a failed measurement never reported as ``ok``."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gradbench.cli import app
from gradbench.errors import SpecError, UserError
from gradbench.spec import parse_spec
from gradbench.typos import closest, edit_distance

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    """The result failed as promised: the exit code, one ``error:`` line, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


def cli(*args, cwd: Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "gradbench", *map(str, args)], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, **kwargs)


# -- specs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "gst(tau=" + "+".join(["1"] * 50_000) + ")",  # 100 kB: was a RecursionError traceback
    "gst(tau=" + "+".join(["1"] * 3_000) + ")",  # short enough to read, too deep to parse
    "gst(tau=" + "[" * 500 + "]" * 500 + ")",
    "gst(tau=" + "(" * 300 + "1" + ")" * 300 + ")",
])
def test_long_or_deep_specs_are_refused_before_parsing(text):
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    assert len(str(err.value)) < 300  # the spec is quoted cut short: the error stays one readable line


def test_long_spec_on_the_command_line_is_one_line(tmp_path):
    one_line_error(invoke("run", "-t", "toy-quadratic", "-e", "gst(tau=" + "+".join(["1"] * 50_000) + ")",
                          "--out", tmp_path / "r"))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text", ["gst(tau=0.5)(gap=2)", "gst()()", "gst(tau=0.5)[0]", "gst(tau=0.5).x"])
def test_a_second_argument_list_is_refused_not_silently_dropped(text):
    # "gst(tau=0.5)(gap=2)" ran as gst(gap=2.0): tau was dropped without a word.
    with pytest.raises(SpecError):
        parse_spec(text)


# -- did you mean -----------------------------------------------------------------------------

@pytest.mark.parametrize("typo, meant", [
    ("gtss", "gst"), ("sgt", "gst"), ("gsst", "gst"), ("reinforec", "reinforce"), ("rienforce", "reinforce"),
    ("vimcoo", "vimco"), ("toy-quadratci", "toy-quadratic"), ("GST", "gst"), ("gs", "gst"),
])
def test_did_you_mean_catches_transpositions_and_doubled_letters(typo, meant):
    from gradbench.registry import estimators, tasks

    assert closest(typo, estimators.names() + tasks.names()) == meant


def test_edit_distance_counts_a_transposition_as_one_edit():
    assert edit_distance("gts", "gst") == 1 and edit_distance("gst", "gst") == 0
    assert edit_distance("gtss", "gst") == 2 and edit_distance("", "abc") == 3
    assert closest("xyzzy", ["gst", "rloo"]) is None


def test_unknown_estimator_typo_gets_a_suggestion(tmp_path):
    line = one_line_error(invoke("run", "-t", "toy-quadratic", "-e", "gtss", "--out", tmp_path / "r"))
    assert "did you mean 'gst'" in line


# -- options: range, size, dtype, duplicates, everything before compute -------------------------

@pytest.mark.parametrize("args", [
    ["run", "-t", "toy-quadratic", "-e", "reinforce", "--seed", 2**63],  # was an OverflowError after mkdir
    ["run", "-t", "toy-quadratic", "-e", "reinforce", "--seed", -1],
    ["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--seed", 2**63],
    ["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--seed", f"0..{2**63}"],
    ["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--seed", "5..1"],
])
def test_seeds_outside_the_generator_range_are_refused_before_any_folder(tmp_path, args):
    line = one_line_error(invoke(*args, "--samples", 10, "--out", tmp_path / "r"))
    assert "--seed" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, needle", [
    (["run", "-t", "toy-quadratic", "-e", "gr-mc(k=1000000000000)"], "noise values"),  # failed in the allocator
    (["run", "-t", "binomial(total_count=1000000000)", "-e", "reinforce"], "tables of"),  # hung sampling
    (["run", "-t", "binomial(total_count=1000000000)", "-e", "gst"], "tables of"),  # categorical view of 1e9
    (["run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", 10**12], "--samples"),  # grew past 1.5 GB
    (["run", "-t", "toy-quadratic", "-e", "reinforce", "--reference-samples", 10**12], "--reference-samples"),
    (["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--seed", "0..100000000", "--dry-run"], "seeds"),
    (["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--estimator-grid", f"m={list(range(2, 400))}",
      "--task-grid", f"dim={list(range(2, 400))}", "--dry-run"], "cells"),
])
def test_absurd_sizes_are_refused_before_compute(tmp_path, args, needle):
    started = time.perf_counter()
    line = one_line_error(invoke(*args, "--out", tmp_path / "r"))
    assert needle in line
    assert time.perf_counter() - started < 30  # refused from an estimate, not after trying
    assert not (tmp_path / "r").exists()


def test_values_not_finite_in_the_chosen_dtype_are_refused(tmp_path):
    # 1e39 is inf in float32: was a ValueError traceback from torch.distributions.
    line = one_line_error(invoke("run", "-t", "toy-quadratic(logits=[1e39, 0.0], target=[0.1, 0.2])",
                                 "-e", "reinforce", "--dtype", "float32", "--samples", 10, "--out", tmp_path / "r"))
    assert "float32" in line and "logits" in line
    assert not (tmp_path / "r").exists()


def test_non_finite_estimates_are_a_failed_measurement_and_a_failed_run(tmp_path):
    # poisson(rate=[1e300]) once gave status ok with bias_norm=inf, relative_bias=nan, and exit 0 (it is
    # now refused before compute, test_extreme_count_parameters_are_refused_not_hung); f = (x − 1e100)²
    # overflows the squared norm of every estimate.
    result = invoke("run", "-t", "toy-quadratic(logits=[0.0, 0.0], target=[1e100, 0.0])", "-e", "reinforce",
                    "--dtype", "float64", "--samples", 10, "--out", tmp_path / "r")
    assert result.exit_code == 1, result.output
    assert "failed" in result.output and "Traceback" not in result.output
    df = pd.read_parquet(tmp_path / "r")
    assert (df["status"] == "failed").all()
    ok_values = df.loc[df["status"] == "ok", "value"]
    assert ok_values.empty
    (run_dir,) = (tmp_path / "r").iterdir()
    sidecar = json.loads((run_dir / "_run.json").read_text())
    assert sidecar["status"] == "failed" and "not finite" in sidecar["error"]


def test_finite_estimates_whose_metrics_overflow_fail_the_measurement():
    import torch

    from gradbench.contract import Chunk
    from gradbench.stats import GroupStats

    # Each ‖g‖² = 2e306 is finite; their sum over 100 estimates (2e308) is not: variance overflows.
    acc = GroupStats(2, torch.zeros(2, dtype=torch.float64))
    acc.add(Chunk.from_gradients(torch.full((100, 2), 1e153, dtype=torch.float64), acc.reference), 0, 0.1)
    summary = acc.finish()
    assert summary.status == "failed" and "not finite" in summary.message and not summary.metrics


@pytest.mark.parametrize("task", ["poisson(rate=[1e300])", "poisson(rate=[1e18])", "geometric(probs=[1e-300])"])
def test_extreme_count_parameters_are_refused_not_hung(tmp_path, task):
    # geometric p = 1e-300 hung inside scipy's isf; Poisson rates ≳ 1e12 got NaN from it and a wrong
    # 101-value grid (silently wrong samples). Now a rough size comes first and the table limit refuses.
    started = time.perf_counter()
    line = one_line_error(invoke("run", "-t", task, "-e", "reinforce", "--samples", 10, "--out", tmp_path / "r"))
    assert "tables of over" in line and "give smaller counts or rates" in line
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "r").exists()


def test_a_non_finite_reference_fails_the_measurement():
    import torch

    from gradbench.contract import Chunk
    from gradbench.stats import GroupStats

    acc = GroupStats(2, torch.tensor([float("inf"), 0.0], dtype=torch.float64))
    acc.add(Chunk.from_gradients(torch.ones(4, 2, dtype=torch.float64), acc.reference), 0, 0.1)
    summary = acc.finish()
    assert summary.status == "failed" and "reference" in summary.message and not summary.metrics


@pytest.mark.parametrize("estimators_given", [
    ["stgs", "stgs(tau=1.0)"],  # measured twice under one label
    ["gst(tau=0.5)", "gst(tau=0.5, gap=1.0)"],
    ["reinforce", "reinforce"],
])
def test_run_refuses_one_configuration_given_twice(tmp_path, estimators_given):
    args = [a for e in estimators_given for a in ("-e", e)]
    line = one_line_error(invoke("run", "-t", "toy-quadratic", *args, "--samples", 10, "--out", tmp_path / "r"))
    assert "give each configuration once" in line
    assert not (tmp_path / "r").exists()


def test_everything_knowable_is_checked_before_measuring(tmp_path):
    # reinforce was measured and written before VIMCO's infeasible exact reference failed.
    line = one_line_error(invoke("run", "-t", "toy-latent", "-e", "reinforce", "-e", "vimco(m=20)", "-e", "rloo",
                                 "--samples", 10, "--out", tmp_path / "r"))
    assert "20-sample bound" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, needle", [
    (["compare", "A", "A", "--max-ratio", "nan"], "--max-ratio"),  # turned a 10x regression into "worse"
    (["compare", "A", "A", "--max-ratio", "inf"], "--max-ratio"),
    (["compare", "A", "A", "--timing-ratio", "nan"], "--timing-ratio"),
    (["compare", "A", "A", "--alpha", "nan"], "--alpha"),
    (["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--gpus-per-cell", "inf", "--dry-run"], "--gpus-per-cell"),
    (["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--jobs", 10**9, "--dry-run"], "--jobs"),
    (["data", "listops", "--out", "x.tsv", "--n", 10**12], "n="),
    (["data", "listops", "--out", "x.tsv", "--max-depth", 10**6], "max_depth"),
    (["data", "listops", "--out", "x.tsv", "--branching-prob", "nan"], "branching_prob"),
])
def test_numeric_options_are_validated(tmp_path, args, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args[0] == "compare":
        _results(tmp_path / "A")
    before = files_under(tmp_path)
    line = one_line_error(invoke(*args))
    assert needle in line
    assert files_under(tmp_path) == before


# -- files and faults -------------------------------------------------------------------------

def _results(path: Path) -> Path:
    result = invoke("run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", 50, "--out", path)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return _results(tmp_path_factory.mktemp("res") / "r")


def test_out_that_cannot_be_a_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        one_line_error(invoke("run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", 10, "--out", out))
    assert files_under(tmp_path) == [blocker]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_line_error(invoke("run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", 10, "--out", ro))
        assert files_under(ro) == []
    finally:
        ro.chmod(0o755)


def _limit_file_size(blocks: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (blocks * 512, blocks * 512))
    return limit


@pytest.mark.parametrize("size", [1, 8])  # the sidecar fails / the sidecar fits but the metrics do not
def test_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, size):
    proc = cli("run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", 10, "--out", "r", cwd=tmp_path,
               preexec_fn=_limit_file_size(size))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: ") and "File too large" in proc.stderr
    left = files_under(tmp_path / "r")
    assert not [p for p in left if p.name.endswith(".tmp")]  # no temporary file
    assert not [p for p in left if p.name == "metrics.parquet"]  # no partial results
    for sidecar in (p for p in left if p.name == "_run.json"):  # a sidecar that fitted says the run failed
        assert json.loads(sidecar.read_text())["status"] == "failed"


def test_stdout_to_a_full_device_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "gradbench", "list"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_compare_csv_into_a_missing_folder_is_one_line(tmp_path, results):
    line = one_line_error(invoke("compare", results, results, "--csv", tmp_path / "nope" / "c.csv"))
    assert "nope" in line
    assert files_under(tmp_path) == []


def test_compare_csv_on_a_full_disk_leaves_no_partial_file(tmp_path, results):
    proc = cli("compare", results, results, "--csv", "c.csv", cwd=tmp_path, preexec_fn=_limit_file_size(1))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr
    assert files_under(tmp_path) == []


def test_data_listops_into_an_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(invoke("data", "listops", "--out", blocker / "data.tsv", "--n", 5))
    proc = cli("data", "listops", "--out", "d.tsv", "--n", 2000, cwd=tmp_path, preexec_fn=_limit_file_size(1))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr
    assert files_under(tmp_path) == [blocker]


def _write(path: Path, table: pa.Table) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "metrics.parquet")
    return path


@pytest.mark.parametrize("damage, needle", [
    ("foreign", "no column 'run_id'"),
    ("missing", "no column 'metric'"),
    ("wrong-type", "column 'value' holds string"),
    ("wrong-type-int", "column 'step' holds double"),
])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_results_of_the_wrong_shape_are_named_on_read(tmp_path, results, damage, needle, command):
    # Were KeyError / AttributeError / TypeError tracebacks; report had made its folders first.
    good = pq.read_table(next(results.rglob("metrics.parquet")))
    table = {
        "foreign": pa.table({"a": [1, 2]}),
        "missing": good.drop(["metric"]),
        "wrong-type": good.set_column(good.schema.get_field_index("value"), "value",
                                      pa.array(["x"] * len(good))),
        "wrong-type-int": good.set_column(good.schema.get_field_index("step"), "step",
                                          pa.array([0.5] * len(good))),
    }[damage]
    bad = _write(tmp_path / "bad" / "run", table)
    args = ["report", tmp_path / "bad", "--out", tmp_path / "rep"] if command == "report" else \
        ["compare", results, tmp_path / "bad"]
    line = one_line_error(invoke(*args))
    assert needle in line and str(bad / "metrics.parquet") in line
    assert not (tmp_path / "rep").exists()


def test_results_files_honour_the_umask(tmp_path):
    # metrics.parquet and _run.json were 0600 (mkstemp's mode) whatever the umask.
    for umask, mode in ((0o022, 0o644), (0o002, 0o664), (0o077, 0o600)):
        old = os.umask(umask)
        try:
            out = tmp_path / f"u{umask:o}"
            assert invoke("run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", 10, "--out", out).exit_code == 0
        finally:
            os.umask(old)
        for name in ("metrics.parquet", "_run.json"):
            (path,) = out.rglob(name)
            assert path.stat().st_mode & 0o777 == mode, (name, oct(umask))


# -- exit codes and signals ---------------------------------------------------------------------

def test_failed_measurement_exits_non_zero_and_says_so(tmp_path, monkeypatch):
    # A run whose only measurement failed exited 0 with a sidecar saying "complete".
    from gradbench.registry import estimators

    cls = estimators.load("reinforce")
    monkeypatch.setattr(cls, "surrogate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken")))
    result = invoke("run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", 10, "--out", tmp_path / "r")
    assert result.exit_code == 1, result.output
    (run_dir,) = (tmp_path / "r").iterdir()
    sidecar = json.loads((run_dir / "_run.json").read_text())
    assert sidecar["status"] == "failed" and "broken" in sidecar["error"]


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    # SIGTERM left _run.json saying "running" for ever.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gradbench", "run", "-t", "toy-bernoulli(dim=50)", "-e",
                             "reinforce", "--samples", "100000000", "--chunk-size", "64", "--out", "r"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not list((tmp_path / "r").rglob("_run.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    (sidecar,) = (tmp_path / "r").rglob("_run.json")
    assert json.loads(sidecar.read_text())["status"] == "interrupted"


# -- engines ----------------------------------------------------------------------------------

def test_loop_and_vectorised_engines_keep_the_documented_promise():
    """docs/reliability.md: same noise; gradients equal to a few units in the last place."""
    import torch

    from gradbench.engine import View, per_draw_gradients
    from gradbench.noise import NoiseSource
    from gradbench.registry import estimators, tasks

    problem = tasks.build("toy-quadratic").problem(torch.device("cpu"), torch.float64)
    for spec in ("gr-mc", "reinforce", "gst"):
        estimator = estimators.build(spec)
        view = View(problem, estimator)
        noise = NoiseSource(0, "measure", torch.device("cpu"), torch.float64).draw_all(
            estimator.noise(view.template), 0, 200)
        vec = per_draw_gradients(view, estimator, None, noise, "vectorized")
        loop = per_draw_gradients(view, estimator, None, noise, "loop")
        for group in vec:
            scale = vec[group].abs().max().clamp_min(1.0)
            assert (vec[group] - loop[group]).abs().max() <= 8 * torch.finfo(torch.float64).eps * scale, spec


def test_an_estimator_without_masks_is_refused_on_a_masked_configuration(tmp_path):
    """toy-quadratic declares no masks (its mask is a parameter), so the view checks the distribution:
    carms, declaring masks=False, was silently biased (relative bias ~0.6) on mask=[1, 0, 1, 1, 1]."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "gradbench", "run", "--task",
         "toy-quadratic(logits=[0.3, -0.2, 1.0, 0.5, 0.1], target=[0.1, 0.6, 0.2, 0.1, 0.0], mask=[1, 0, 1, 1, 1])",
         "--estimator", "carms", "--samples", "100", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not support masked categories" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())
