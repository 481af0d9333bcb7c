"""What people and programs read: no number cut at 80 columns or in a pipe, and the machine formats.

The command-line tests run ``gradbench`` in a subprocess whose standard output is a pipe
(as ``| cat``) with COLUMNS=80, the case where the old tables cut 10 of 16 lines.
"""

import csv
import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from gradbench import store
from gradbench.cli import app
from gradbench.numbers import format_number
from gradbench.output import Column, Joined, Mark, Number, Printer, Table, markdown, print_table, to_csv, vertical
from gradbench.registry import estimators
from gradbench.summary import FIXED_METRICS, SCALE, fixed_tables

from rows import row

runner = CliRunner()
GRADBENCH = [sys.executable, "-m", "gradbench"]


def piped(*args, columns=80, **kw):
    """``COLUMNS=80 gradbench ARGS | cat``: standard output is a pipe, not a terminal."""
    env = dict(os.environ, COLUMNS=str(columns))
    return subprocess.run([*GRADBENCH, *map(str, args)], env=env, capture_output=True, text=True, timeout=600, **kw)


def expected(run_rows: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """(estimator, group, metric) -> the stored value printed as people read it."""
    out = {}
    for r in run_rows.itertuples():
        if r.metric in FIXED_METRICS:
            out[r.estimator_label, r.param_group, r.metric] = str(Number(r.value, r.ci_low, r.ci_high,
                                                                       SCALE.get(r.metric, 1.0)))
    return out


@pytest.fixture(scope="module")
def run80(tmp_path_factory):
    out = tmp_path_factory.mktemp("run80")
    result = piped("run", "--task", "toy-quadratic", "-e", "stgs", "-e", "gst", "-e", "rloo", "--samples", 2000,
                   "--out", out)
    assert result.returncode == 0, result.stderr
    return result.stdout, pd.read_parquet(out)


def test_run_at_80_columns_in_a_pipe_prints_every_stored_number_whole(run80):
    stdout, df = run80
    assert "…" not in stdout
    records = stdout.split("\nreference: ")[0]  # then sentences, printed whole (a terminal folds them)
    assert all(len(line) <= 80 for line in records.splitlines())
    want = expected(df)
    # One record per estimator: "stgs · logits", then "  <heading>  <value ±h>" lines.
    printed, record = {}, None
    headings = {h: m for m, h in FIXED_METRICS.items()}
    for line in stdout.splitlines():
        if re.fullmatch(r"\S+ · \S+", line):
            record = tuple(line.split(" · "))
        elif not line.startswith("  "):
            record = None  # after the records: the results folder and the report command
        elif record:
            heading, value = re.fullmatch(r"  (.+?)\s{2,}(\S.*)", line).groups()
            printed[(*record, headings[heading.strip()])] = value
    assert printed == want  # every metric of every estimator, each exactly the stored value's text
    assert len(want) == 3 * len(FIXED_METRICS)


def test_run_table_when_wide_is_boxed_and_its_numbers_are_the_stored_ones(run80):
    _, df = run80
    (table,), _ = fixed_tables(df.to_dict("records"))
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_table(console, table)
    text = console.file.getvalue()
    assert "┃ estimator" in text and "…" not in text
    cells = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("│")[1:-1]]
        if len(parts) == 2 + len(FIXED_METRICS):
            for metric, value in zip(FIXED_METRICS, parts[2:]):
                cells[(parts[0], parts[1], metric)] = value
    assert cells == expected(df)


def test_list_estimators_in_a_pipe_shows_every_description_and_task_whole():
    result = piped("list", "estimators")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "…" not in out
    flat = " ".join(out.split())
    for name in estimators.names():
        info = estimators.info(name)
        assert re.search(rf"^{re.escape(name)}$", out, re.M), name  # each record's heading: the name, whole
        assert " ".join(info.description.split()) in flat, name
    assert "fits tasks    binomial, geometric, mnist-vae," in out


def test_narrow_layout_is_chosen_only_when_the_box_would_cut_and_wraps_at_spaces():
    table = Table("t", "a title", [Column("name"), Column("value", numeric=True), Column("note")])
    table.add("x", Number(0.00123456, 0.001, 0.0015), "a long note " * 8)
    wide = Console(file=io.StringIO(), width=200, color_system=None)
    print_table(wide, table)
    assert "┃ name" in wide.file.getvalue()
    narrow = Console(file=io.StringIO(), width=28, color_system=None)
    print_table(narrow, table)
    text = narrow.file.getvalue()
    assert "┃" not in text and "…" not in text and "0.00123 ±2.65e-04" in text
    assert all(len(line) <= 28 for line in text.splitlines())
    # The check can fail: rich's own table at 28 columns does cut.
    from gradbench.output import _rich

    cut = Console(file=io.StringIO(), width=28, color_system=None)
    cut.print(_rich(table))
    assert "…" in cut.file.getvalue()
    # A word longer than the width overflows whole rather than being broken.
    long = Table("t", "", [Column("name"), Column("path")])
    long.add("x", "/a/very/long/path/that/does/not/fit/in/twenty/columns/at/all")
    assert any("/a/very/long/path/that/does/not/fit/in/twenty/columns/at/all" in str(line)
               for line in vertical(long, 20))


def sample_table() -> Table:
    table = Table("results", "toy: estimates", [Column("estimator"), Column("variance", numeric=True),
                                                Column("tasks"), Column("verdict"),
                                                Column("status", machine_only=True)])
    table.add("gst | x", Number(0.1 + 0.2, 0.25, 0.35), Joined(("a", "b")), Mark("regression", "red"), "ok")
    table.add("rloo", Number(float("nan")), Joined(()), "same", "ok")
    return table


def test_markdown_csv_and_json_carry_the_same_rows_at_full_precision():
    table = sample_table()
    md = markdown(table)
    assert md.splitlines()[2] == "| estimator | variance | tasks | verdict |"
    assert "| gst \\| x | 0.3 ±0.05 | a, b | regression |" in md  # "|" escaped; status is for machines
    rows = list(csv.DictReader(io.StringIO(to_csv([table]))))
    assert rows[0]["variance"] == repr(0.1 + 0.2) and float(rows[0]["variance"]) == 0.1 + 0.2
    assert rows[0]["variance_ci_low"] == "0.25" and rows[0]["tasks"] == "a; b" and rows[0]["status"] == "ok"
    assert rows[1]["variance"] == "" and rows[0]["table"] == "results"
    buf = io.StringIO()
    with Printer("json", Console(file=buf)) as printer:
        printer.table(table)
        printer.line("a sentence")
        printer.field("runs", {"run_id": "r"})
    doc = json.loads(buf.getvalue())
    assert doc["tables"][0]["rows"][0] == {"estimator": "gst | x", "variance": 0.1 + 0.2, "variance_ci_low": 0.25,
                                           "variance_ci_high": 0.35, "tasks": ["a", "b"], "verdict": "regression",
                                           "status": "ok"}
    assert doc["tables"][0]["rows"][1]["variance"] is None
    assert doc["messages"] == ["a sentence"] and doc["runs"] == [{"run_id": "r"}]


def test_a_failed_block_writes_no_half_document():
    buf = io.StringIO()
    with pytest.raises(RuntimeError):
        with Printer("json", Console(file=buf)) as printer:
            printer.table(sample_table())
            raise RuntimeError("boom")
    assert buf.getvalue() == ""


def test_run_formats_in_process(tmp_path):
    for fmt in ("markdown", "csv", "json"):
        r = runner.invoke(app, ["run", "--task", "toy-quadratic", "-e", "rloo", "--samples", 500, "--format", fmt,
                                "--out", str(tmp_path / fmt)])
        assert r.exit_code == 0, r.output
        df = pd.read_parquet(tmp_path / fmt)
        variance = df[df["metric"] == "variance"]["value"].item()
        if fmt == "json":
            doc = json.loads(r.stdout)
            assert doc["tables"][0]["rows"][0]["variance"] == variance
            assert doc["runs"][0]["status"] == "complete" and doc["runs"][0]["reference"] == "exact"
        elif fmt == "csv":
            first = next(csv.DictReader(io.StringIO(r.stdout)))
            assert float(first["variance"]) == variance and first["task"] == "toy-quadratic"
        else:
            assert f"| rloo | logits | {format_number(variance)} ±" in r.stdout
    bad = runner.invoke(app, ["run", "--task", "toy-quadratic", "-e", "rloo", "--format", "jsn"])
    assert bad.exit_code == 2 and bad.output.startswith("error: unknown --format 'jsn'; did you mean 'json'?")
    assert len(bad.output.strip().splitlines()) == 1


def test_list_json_is_the_catalogue():
    r = runner.invoke(app, ["list", "tasks", "--format", "json"])
    assert r.exit_code == 0, r.output
    (tasks,) = json.loads(r.stdout)["tables"]
    quad = next(t for t in tasks["rows"] if t["name"] == "toy-quadratic")
    assert isinstance(quad["parameters"], list) and quad["description"]


# -- a training run: progress lines in a pipe, then the summary of its last step ----------------------------------

def test_training_prints_plain_progress_lines_then_a_summary_of_stored_numbers(tmp_path):
    import torch

    from gradbench.progress import RunProgress
    from gradbench.summary import training_tables
    from gradbench.training import TrainingSession

    from toy_training import ToyTraining

    console = Console(file=io.StringIO(), width=80, color_system=None)  # not a terminal: a pipe or a log
    task, rows = ToyTraining(), []
    common = {"run_id": "t", "created_at": None, "gradbench_version": "0", "torch_version": torch.__version__,
              "device": "cpu", "dtype": "float64", "seed": 0, "task": task.name, "task_version": task.version,
              "task_params": task.params_json(), "engine": "vectorized", "step": 0, "reference": "auto",
              "reference_samples": 0}
    with RunProgress(console) as progress:
        session = TrainingSession(estimator=estimators.build("gst"), device=torch.device("cpu"), dtype=torch.float64,
                                  seed=0, samples=200, reference="exact", reference_samples=0, chunk_size=1 << 16,
                                  run_dir=tmp_path, record=rows.extend, common=common, progress=progress,
                                  console=console)
        task.train(session.estimator, session)
    lines = console.file.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines if "train/loss" in line] == [f"gst seed 0 step {s}" for s in range(7)]
    measured = [line for line in lines if "variance/element" in line]
    assert measured and measured[-1].startswith("gst seed 0 step 6: logits variance/element ")
    tables, failures = training_tables(rows)
    assert [t.name for t in tables] == ["curves", "results"] and failures == []
    out = Console(file=io.StringIO(), width=40, color_system=None)  # narrow: one field a line, easy to read back
    for table in tables:
        print_table(out, table)
    text = out.file.getvalue()
    assert "…" not in text and "┃" not in text and "toy-training: training curves at step 6" in text
    last = {(r["metric"], r["param_group"]): r for r in rows if r["step"] == 6}
    field = lambda heading: re.search(rf"^  {re.escape(heading)}\s+(.+)$", text, re.M).group(1)  # noqa: E731
    assert field("train/loss") == str(Number(last["train/loss", ""]["value"], digits=4))  # curves: 4 digits
    assert field("valid/accuracy") == str(Number(last["valid/accuracy", ""]["value"], digits=4))  # next line
    for metric, heading in (("variance_per_element", "variance / element"), ("bias_norm", "bias ‖E ĝ − g‖")):
        r = last[metric, "logits"]
        assert field(heading) == str(Number(r["value"], r["ci_low"], r["ci_high"]))


def test_on_a_terminal_status_lines_sit_under_the_bar_and_are_not_printed_one_by_one():
    from gradbench.progress import RunProgress

    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    with RunProgress(console) as progress:
        assert progress.live
        bar = progress.add_task("gst · training", total=3)
        for step in range(3):
            progress.advance(bar, 1)
            progress.status(f"gst seed 0 step {step}: train/loss {100 - step}", "curves")
        assert progress._bars.lines == {"curves": "gst seed 0 step 2: train/loss 98"}
        progress.remove_task(bar)
    plain = RunProgress(Console(file=io.StringIO(), width=80, color_system=None))
    assert not plain.live and plain.add_task("x", 3) is None  # not a terminal: no bar at all
    plain.status("a line")
    assert plain.console.file.getvalue() == "a line\n"


# -- compare for CI: JUnit and GitHub annotations ------------------------------------------------------------------

def write(path: Path, rows) -> Path:
    path.mkdir(parents=True)
    store.write_metrics(path, rows)
    return path


@pytest.fixture
def regressed(tmp_path):
    base = write(tmp_path / "base" / "run", [row("variance", 1.0, se=0.01), row("mse", 1.0, se=0.01)])
    worse = write(tmp_path / "worse" / "run", [row("variance", 1.5, se=0.015), row("mse", 1.0, se=0.01)])
    return base, worse


def test_compare_junit_names_the_regressed_metric_and_by_how_much(regressed):
    base, worse = regressed
    r = runner.invoke(app, ["compare", str(base), str(worse), "--format", "junit"])
    assert r.exit_code == 1
    suite = ET.fromstring(r.stdout).find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"logits variance", "logits mse"}
    failure = cases["logits variance"].find("failure")
    assert cases["logits variance"].get("classname") == "toy-quadratic · gst"
    assert failure.get("message").startswith("toy-quadratic · gst: logits variance regression: 1.5× worse "
                                             "(baseline 1 ±")
    assert "current 1.5 ±" in failure.get("message") and "limit 1.25×" in failure.get("message")
    assert cases["logits mse"].find("failure") is None
    same = runner.invoke(app, ["compare", str(base), str(base), "--format", "junit"])
    assert same.exit_code == 0 and ET.fromstring(same.stdout).find("testsuite").get("failures") == "0"


def test_compare_github_annotates_the_regression_then_prints_the_table(regressed, tmp_path, monkeypatch):
    base, worse = regressed
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = runner.invoke(app, ["compare", str(base), str(worse), "--format", "github", "--junit",
                            str(tmp_path / "j.xml")])
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0].startswith("::error title=toy-quadratic · gst%3A logits variance::toy-quadratic · gst: logits "
                               "variance regression: 1.5× worse")
    assert sum(line.startswith("::") for line in lines) == 1  # mse is unchanged: no annotation
    assert "2 metrics compared: 1 identical, 1 regression" in r.stdout  # the table and totals follow
    assert "| toy-quadratic | gst | logits | 0 | variance | 1 ±" in summary.read_text()
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite").get("failures") == "1"


def test_verify_junit_has_one_test_per_task_check(tmp_path):
    r = runner.invoke(app, ["verify", "rloo(m=3)", "--task", "toy-quadratic", "--against", "reinforce", "--format",
                            "junit", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    suite = ET.fromstring(r.stdout).find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) >= 1
    case = next(suite.iter("testcase"))
    assert case.get("classname").startswith("rloo(m=3) · toy-quadratic") and case.get("name") == "logits"
