"""The command line: a real run, its files, and every bad input rejected in one line."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from gradbench import store
from gradbench.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_writes_one_folder_with_tidy_rows(tmp_path):
    out = tmp_path / "res"
    result = invoke("run", "--task", "toy-quadratic", "-e", "reinforce", "-e", "gst(gap=1.2, tau=0.5)",
                    "--samples", 2000, "--out", out)
    assert result.exit_code == 0, result.output
    assert "gst(gap=1.2, tau=0.5)" in result.output and "reference: exact" in result.output
    (run_dir,) = out.iterdir()
    df = pd.read_parquet(out)
    assert list(df.columns) == store.SCHEMA.names
    assert set(df["estimator"]) == {"reinforce", "gst"}
    assert set(df["estimator_label"]) == {"reinforce", "gst(gap=1.2, tau=0.5)"}
    assert {"variance", "variance_per_element", "bias_norm", "relative_bias", "mse", "cosine", "snr",
            "seconds_per_estimate", "work_normalized_variance"} <= set(df["metric"])
    assert (df["step"] == 0).all() and (df["n_estimates"] == 2000).all() and (df["status"] == "ok").all()
    assert json.loads(df.loc[df.estimator == "gst", "estimator_params"].iloc[0]) == {"gap": 1.2, "hard": True, "tau": 0.5}
    assert df["dtype"].iloc[0] == "float64" and df["reference"].iloc[0] == "exact"
    sidecar = json.loads((run_dir / "_run.json").read_text())
    assert sidecar["status"] == "complete"
    assert sidecar["environment"]["torch"] and sidecar["options"]["samples"] == 2000


@pytest.mark.cpu_only(reason="bit-for-bit identity of repeated runs is promised on CPU only (docs/gpu.md)")
def test_same_seed_gives_identical_rows_and_runs_never_overwrite(tmp_path):
    args = ("run", "--task", "toy-bernoulli", "-e", "stgs", "-e", "rloo", "--samples", 1000, "--seed", 7, "--out", tmp_path)
    assert invoke(*args).exit_code == 0
    assert invoke(*args).exit_code == 0
    df = pd.read_parquet(tmp_path)
    assert df["run_id"].nunique() == 2
    timing = df["metric"].isin(["seconds_per_estimate", "work_normalized_variance"])
    a, b = (g[~timing.loc[g.index]].sort_values(["estimator", "metric"])["value"].to_numpy()
            for _, g in df.groupby("run_id"))
    assert (a == b).all()


def test_reinforce_reference_is_recorded(tmp_path):
    result = invoke("run", "--task", "toy-quadratic", "-e", "stgs", "--samples", 500, "--reference", "reinforce",
                    "--reference-samples", 20_000, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path)
    assert set(df["reference"]) == {"reinforce"} and set(df["reference_samples"]) == {20_000}
    assert (df.loc[df.metric == "reference_stderr", "value"] > 0).all()


BAD_INPUTS = [
    (["--task", "toy-quadratic", "-e", "gsts"], "unknown estimator 'gsts'; did you mean"),
    (["--task", "toy-quadratc", "-e", "gst"], "unknown task 'toy-quadratc'; did you mean 'toy-quadratic'?"),
    (["--task", "toy-quadratic", "-e", "gst(tua=1)"], "unknown parameter 'tua'; did you mean 'tau'?"),
    (["--task", "toy-quadratic", "-e", "gst(tau=0)"], "gst: tau must be > 0, got 0"),
    (["--task", "toy-quadratic", "-e", "stgs(tau=-1.5)"], "tau must be > 0"),
    (["--task", "toy-quadratic", "-e", "gst(gap=-0.5)"], "gap must be ≥ 0 or 'p'"),
    (["--task", "toy-quadratic", "-e", "gst(gap='q')"], "gap must be a number or ≥ 0 or 'p'"),
    (["--task", "toy-quadratic", "-e", "gr-mc(k=0)"], "k must be ≥ 1"),
    (["--task", "toy-quadratic", "-e", "gr-mc(k=2.5)"], "k must be an integer"),
    (["--task", "toy-quadratic", "-e", "gst(hard='yes')"], "hard must be True or False"),
    (["--task", "toy-quadratic(logits=[0.1, 1e999])", "-e", "gst"], "logits[1] must be finite"),
    (["--task", "toy-quadratic(logits=[0.1, 0.2], target=[0.5])", "-e", "gst"], "target has 1 values but logits has 2"),
    (["--task", "toy-quadratic(logits='abc')", "-e", "gst"], "must be a list of numbers"),
    (["--task", "toy-quadratic", "-e", "gst(1.0)"], "arguments must be named"),
    (["--task", "toy-quadratic", "-e", "gst(gap=1.0"], "cannot read"),
    (["--task", "toy-quadratic", "-e", "gst(gap=os.system('x'))"], "is not a literal"),
    (["--task", "toy-quadratic", "-e", "gst", "--samples", "1"], "--samples must be at least 2"),
    (["--task", "toy-quadratic", "-e", "gst", "--samples", "many"], "Invalid value for '--samples'"),
    (["--task", "toy-quadratic", "-e", "gst", "--engine", "turbo"], "unknown engine 'turbo'"),
    (["--task", "toy-quadratic", "-e", "gst", "--reference", "magic"], "unknown reference 'magic'"),
    (["--task", "toy-quadratic", "-e", "gst", "--device", "tpu"], "unknown device 'tpu'"),
    (["--task", "toy-quadratic", "-e", "gst", "--dtype", "float16"], "unknown dtype 'float16'"),
    (["--task", "toy-quadratic", "-e", "gst", "-e", "gst"], "given twice"),
    (["--task", "toy-quadratic"], "Missing option '--estimator'"),
    (["-e", "gst"], "Missing option '--task'"),
    (["--task", "toy-quadratic", "-e", "gst", "--frobnicate"], "No such option"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[m[:30] for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    result = invoke("run", *args, "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cuda_without_a_gpu_is_a_clean_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = invoke("run", "--task", "toy-quadratic", "-e", "gst", "--device", "cuda", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "no CUDA device" in result.stderr
    assert not (tmp_path / "x").exists()


def test_list():
    result = invoke("list", "estimators")
    assert result.exit_code == 0
    for name in ("gst", "gr-mc", "rloo", "reinforce-ema", "stgs", "st", "gumbel-softmax", "reinforce"):
        assert name in result.output
    assert "tau=1.0" in result.output and "unbiased" in result.output
    tasks = invoke("list", "tasks")
    assert "toy-bernoulli" in tasks.output and "target=0.499" in tasks.output
    bad = invoke("list", "estimatorz")
    assert bad.exit_code == 2 and "did you mean 'estimators'" in bad.stderr


def test_help_everywhere():
    for args in ([], ["--help"], ["run", "--help"], ["list", "--help"]):
        result = invoke(*args)
        assert result.exit_code == 0, args
        assert "Usage" in result.output


def test_python_dash_m_and_console_script_agree():
    a = subprocess.run([sys.executable, "-m", "gradbench", "--version"], capture_output=True, text=True)
    assert a.returncode == 0 and a.stdout.startswith("gradbench ")
    b = subprocess.run([sys.executable, "-m", "gradbench", "run", "--task", "nope", "-e", "gst"], capture_output=True, text=True)
    assert b.returncode == 2 and b.stderr.count("\n") == 1 and "Traceback" not in b.stderr


def test_task_data_commands_come_from_the_registry_without_torch():
    """`gradbench data` lists the commands tasks declare (Task.data_commands), and neither the
    top-level help nor the group's help imports torch."""
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom gradbench.cli import app\n"
            "top = CliRunner().invoke(app, ['--help'])\ngroup = CliRunner().invoke(app, ['data', '--help'])\n"
            "assert top.exit_code == 0 and group.exit_code == 0, (top.output, group.output)\n"
            "assert 'listops' in group.output, group.output\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from gradbench.registry import tasks

    assert tasks.info("listops").commands == {"listops": "gradbench.tasks.listops.cli:data_listops"}


def test_run_and_sweep_flags_come_from_the_one_options_definition():
    """Every RunOptions field is a flag of `run` and of `sweep` (sweep spells --seed itself, as a list)."""
    import typer.main

    from gradbench.options import RunOptions, cli_fields

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}
    for command, own in (("run", set()), ("sweep", {"seed"})):
        flags = {p.name for p in commands[command].params}
        assert {f.name for f in cli_fields()} - own <= flags, command
        helps = {p.name: p.help for p in commands[command].params}
        for f in cli_fields():
            if f.name not in own:
                assert helps[f.name] == f.metadata["help"]
    assert {f.name for f in cli_fields()} == {f.name for f in __import__("dataclasses").fields(RunOptions)} - {"out"}


def test_threads_flag_sets_torch_threads_and_keeps_numbers(tmp_path):
    """--threads 2 and the default (1) store bit-identical float64 numbers; --threads -1 is a clean error."""
    rows = {}
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        result = invoke("run", "--task", "toy-quadratic", "-e", "reinforce", "-e", "stgs", "--samples", 400,
                        "--threads", threads, "--out", out)
        assert result.exit_code == 0, result.output
        run = next(out.iterdir())
        assert store.read_sidecar(run)["environment"]["torch_threads"] == threads
        frame = store.read_results(out)
        frame = frame[~frame["metric"].isin(["seconds_per_estimate", "work_normalized_variance"])]
        rows[threads] = frame.sort_values(["estimator", "param_group", "metric"])[["metric", "value"]].to_numpy().tolist()
    assert rows[1] == rows[2]
    bad = invoke("run", "--task", "toy-quadratic", "-e", "gst", "--threads", -1, "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "--threads must be at least 0" in bad.output
    assert not (tmp_path / "bad").exists()
