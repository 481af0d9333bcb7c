"""gradbench sweep: grids, cell identity, resume after a kill, failures, workers, filesystems, Ray."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from gradbench.sweep.cell_folders import Busy, CellStore
from gradbench.sweep.cells import run_cell
from gradbench.cli import app
from gradbench.errors import UserError
from gradbench.sweep.grid import Grid, expand, resolve
from gradbench.run import RunOptions
from gradbench.store import read_results
from gradbench.sweep.suites import load_grids, load_suite
from gradbench.sweep import SweepOptions, rerun_command, run_sweep

runner = CliRunner()
TIMING = ("seconds_per_estimate", "work_normalized_variance")
GRID = ["-t", "toy-quadratic", "-e", "stgs", "-e", "gst(gap=1.2)", "--estimator-grid", "tau=[1.0, 0.5]",
        "--seed", "0..1", "--samples", "300", "--device", "cpu"]


def sweep(*args: str):
    return runner.invoke(app, ["sweep", *args])


def numbers(path) -> pd.DataFrame:
    """Non-timing rows keyed by configuration, sorted: what must agree bit for bit across backends."""
    df = read_results(path)
    df = df[~df["metric"].isin(TIMING)]
    return df.set_index(["task_params", "estimator_label", "seed", "param_group", "step", "metric"])[
        ["value", "ci_low", "ci_high"]].sort_index()


def cell_folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith((".", "_")))


# -- grids ------------------------------------------------------------------------------------
def test_grid_crosses_estimators_parameters_and_seeds_seeds_outermost():
    grid = Grid(("toy-quadratic",), ("stgs", "gst(gap=1.2)"), estimator_grid={"tau": (1.0, 0.5)},
                options={"seed": (0, 1), "samples": (300,)})
    cells = expand(grid)
    assert [(e, o.seed) for _, e, o in cells] == [
        (e, s) for s in (0, 1) for e in ("stgs(tau=1.0)", "stgs(tau=0.5)", "gst(gap=1.2, tau=1.0)",
                                         "gst(gap=1.2, tau=0.5)")]
    assert {o.samples for _, _, o in cells} == {300}
    tasks = expand(Grid(("toy-bernoulli",), ("rloo",), task_grid={"dim": (2, 3)}))
    assert [t for t, _, _ in tasks] == ["toy-bernoulli(dim=2)", "toy-bernoulli(dim=3)"]


BAD_GRIDS = [
    (dict(estimator_grid={"tua": (1.0,)}), "stgs has no parameter 'tua' to cross; did you mean 'tau'?"),
    (dict(estimators=("stgs", "rloo"), estimator_grid={"tau": (1.0,)}), "rloo has no parameter 'tau'"),
    (dict(estimators=("stgs(tau=0.3)",), estimator_grid={"tau": (1.0,)}), "already sets tau"),
    (dict(estimator_grid={"tau": (1.0, -1.0)}), "tau must be > 0"),
    (dict(task_grid={"logits": ([0.1, float("nan")],)}), "must be finite"),
    (dict(options={"samples": (1,)}), "--samples must be at least 2"),
    (dict(options={"sample": (10,)}), "unknown option 'sample'; did you mean 'samples'"),
    (dict(estimators=("disarm",)), "disarm cannot run on toy-quadratic"),
    (dict(options={"seed": ()}), "seed has no values"),
]


@pytest.mark.parametrize("change, message", BAD_GRIDS)
def test_bad_grids_fail_before_anything_runs(change, message):
    grid = replace(Grid(("toy-quadratic",), ("stgs",)), **change)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("?", r"\?")):
        expand(grid)


SUITES = """
[grid]
seed = [0, 1]
samples = 300
device = "cpu"

[[grid.runs]]
task = ["toy-quadratic", "toy-bernoulli(dim=3)"]
estimators = ["stgs", "gst(gap=1.2)"]
estimator_grid = { tau = [1.0, 0.5] }
warmup = [10, 20]

[[grid.runs]]
task = "toy-bernoulli(dim=3)"
estimators = ["rloo"]
"""


def test_suites_hold_grids_for_sweeps_but_not_for_runs(tmp_path):
    path = tmp_path / "suites.toml"
    path.write_text(SUITES)
    _, grids = load_grids("grid", path)
    assert [len(expand(g)) for g in grids] == [2 * 2 * 2 * 2 * 2, 2]
    assert grids[0].options["warmup"] == (10, 20) and grids[1].options["seed"] == (0, 1)
    for name in ("grid",):
        with pytest.raises(UserError, match="lists and grids make a sweep: gradbench sweep --suite grid"):
            load_suite(name, path)
    bad = SUITES.replace("warmup = [10, 20]", "warmup = [10, 'x']")
    path.write_text(bad)
    with pytest.raises(UserError, match="warmup must be an integer"):
        load_grids("grid", path)
    path.write_text(SUITES.replace("estimator_grid = { tau = [1.0, 0.5] }", "estimator_grid = 3"))
    with pytest.raises(UserError, match="estimator_grid must be a table"):
        load_grids("grid", path)


def test_builtin_gst_table_suites_are_the_papers_grid():
    for name, seeds, cells in (("gst-table", 10, 80), ("gst-table-cpu", 3, 24)):
        _, grids = load_grids(name)
        triples = [t for g in grids for t in expand(g)]
        assert len(triples) == cells and len({o.seed for _, _, o in triples}) == seeds
        assert {e for _, e, _ in triples} == {f"{e}, tau={t})" if "(" in e else f"{e}(tau={t})"
                                               for e in ("stgs", "gr-mc(k=100", "gst(gap=1.0", "gst(gap=1.2")
                                               for t in (1.0, 0.5)}
    _, ci = load_grids("ci")  # the CI suite sweeps as well as it runs
    assert sum(len(expand(g)) for g in ci) == sum(len(r.estimators) for r in load_suite("ci").runs)


# -- identity ---------------------------------------------------------------------------------
def _identity(task="toy-quadratic", estimator="gst", device_auto="cpu", **options):
    (cell,), _ = resolve([(task, estimator, RunOptions(**options))], device_auto)
    return cell.id


def test_cell_identity_is_stable_and_resolved():
    base = _identity()
    assert base == _identity() and len(base) == 12
    assert _identity(estimator="gst(gap=1.0, tau=1.0)") == base  # the defaults written out: the same cell
    assert _identity(samples=10_000) == base  # toy tasks' default S
    assert _identity(out="elsewhere") == base  # where results go is not part of a cell
    assert _identity(device="auto", device_auto="cpu") == base == _identity(device="cpu", device_auto="cuda")
    # the same hash in a fresh interpreter: nothing depends on hash seeds or dict order
    code = "from gradbench.sweep.grid import resolve; from gradbench.run import RunOptions; " \
           "print(resolve([('toy-quadratic', 'gst', RunOptions())], 'cpu')[0][0].id)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == base


@pytest.mark.parametrize("change", [
    dict(seed=1), dict(samples=300), dict(reference="reinforce"), dict(reference_samples=5000),
    dict(engine="loop"), dict(dtype="float32"), dict(device="cuda"), dict(warmup=10), dict(chunk_size=100),
    dict(estimator="gst(gap=1.2)"), dict(estimator="stgs"), dict(task="toy-quadratic(target=[0.1] * 10)".replace("[0.1] * 10", str([0.1] * 10))),
    dict(task="toy-bernoulli"), dict(device="auto", device_auto="cuda"),
])
def test_cell_identity_changes_with_every_option_that_changes_numbers(change):
    assert _identity(**change) != _identity()


def test_cell_identity_changes_with_versions(monkeypatch):
    from gradbench.registry import estimators

    base = _identity()
    monkeypatch.setattr(estimators.load("gst"), "version", 2)
    assert _identity() != base


def test_duplicate_configurations_run_once():
    cells, duplicates = resolve([("toy-quadratic", e, RunOptions()) for e in ("gst", "gst(gap=1.0)", "stgs")], "cpu")
    assert len(cells) == 2 and duplicates == 1


# -- running, resuming ------------------------------------------------------------------------
def test_sweep_runs_every_cell_once_and_resumes_skipping_complete_ones(tmp_path):
    out = tmp_path / "res"
    result = sweep(*GRID, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "8 cells: 0 complete before, 8 run now (8 complete, 0 failed" in result.output
    df = pd.read_parquet(out)  # the plain pyarrow reader sees exactly the cells
    assert df["run_id"].nunique() == 8 and sorted(df["run_id"].unique()) == cell_folders(out)
    sidecar = json.loads((out / cell_folders(out)[0] / "_run.json").read_text())
    assert sidecar["cell"]["status"] == "complete" and sidecar["cell"]["identity"]["samples"] == 300
    before = {p: (out / p / "metrics.parquet").stat().st_mtime_ns for p in cell_folders(out)}
    again = sweep(*GRID, "--seed", "2", "--out", str(out))  # seeds 0..1 again plus seed 2
    assert again.exit_code == 0 and "12 cells: 8 complete before, 4 run now" in again.output, again.output
    assert all((out / p / "metrics.parquet").stat().st_mtime_ns == t for p, t in before.items())
    assert pd.read_parquet(out)["run_id"].nunique() == 12


def test_leftovers_of_a_killed_cell_are_removed_and_the_cell_rerun(tmp_path):
    out = tmp_path / "res"
    assert sweep(*GRID, "--out", str(out)).exit_code == 0
    victim = cell_folders(out)[0]
    # What a kill leaves: the cell's work folder (a partial metrics file) and no published folder.
    os.rename(out / victim, out / f".{victim}.dead.tmp")
    reference = numbers(out)  # hidden folders are not read
    assert read_results(out)["run_id"].nunique() == 7
    result = sweep(*GRID, "--out", str(out))
    assert "8 cells: 7 complete before, 1 run now (1 complete" in result.output, result.output
    assert not [p for p in out.iterdir() if p.name.startswith(f".{victim}")]
    df = read_results(out)
    assert df["run_id"].nunique() == 8 and not df.duplicated(["run_id", "param_group", "step", "metric"]).any()
    pd.testing.assert_frame_equal(numbers(out).loc[reference.index], reference)


def test_sigkill_at_any_moment_then_resume_gives_every_cell_once(tmp_path):
    """A real kill mid-cell: the sweep process is SIGKILLed while a cell's work folder exists."""
    out = tmp_path / "res"
    args = [sys.executable, "-m", "gradbench", "sweep", "-t", "toy-bernoulli(dim=20)", "-e", "rloo", "-e", "stgs",
            "--seed", "0..3", "--samples", "20000", "--device", "cpu", "--threads", "1", "--out", str(out)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done = cell_folders(out) if out.exists() else []
            working = [p for p in out.glob(".*.tmp")] if out.exists() else []
            if done and working:
                break
            assert process.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    killed_with = len(cell_folders(out))
    assert 1 <= killed_with < 8
    result = sweep(*args[args.index("-t"):])
    assert result.exit_code == 0 and f"8 cells: {killed_with} complete before" in result.output, result.output
    df = pd.read_parquet(out)
    assert df["run_id"].nunique() == 8 and not df.duplicated(["run_id", "param_group", "step", "metric"]).any()
    assert not list(out.glob(".*.tmp"))


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "res"
    # VIMCO with m = 20 on toy-latent: 4^20 tuples, no exact reference, so the cell fails cleanly.
    args = ["-t", "toy-latent", "-e", "vimco(m=20)", "-e", "vimco", "--seed", "0..1", "--samples", "300",
            "--out", str(out)]
    result = sweep(*args)
    assert result.exit_code == 1
    assert "4 cells: 0 complete before, 4 run now (2 complete, 2 failed" in result.output, result.output
    assert "failed: toy-latent · vimco(m=20) · seed 0: UserError: the 20-sample bound has 4^20 tuples" in result.output
    assert f"re-run it: gradbench sweep --task toy-latent --estimator 'vimco(m=20)' --samples 300 --seed 1 --out {out}" \
        in result.output
    df = read_results(out)
    failed = df[df["status"] == "failed"]
    assert len(failed) == 2 and set(failed["metric"]) == {"failed"} and set(failed["estimator_label"]) == {"vimco(m=20)"}
    statuses = sorted(json.loads((out / p / "_run.json").read_text())["cell"]["status"] for p in cell_folders(out))
    assert statuses == ["complete", "complete", "failed", "failed"]
    again = sweep(*args)  # failed cells are retried
    assert "4 cells: 2 complete before, 2 run now (0 complete, 2 failed" in again.output, again.output
    assert len(read_results(out)) == len(df)  # retried cells replaced, not duplicated


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_cells_without_cuda_fail_before_anything_runs(tmp_path):
    result = sweep(*GRID, "--device", "cuda", "--out", str(tmp_path / "res"))
    assert result.exit_code == 2 and "8 cells ask for --device cuda but this machine has no CUDA" in result.output
    assert not (tmp_path / "res").exists()


def test_rerun_command_names_the_same_cell(tmp_path):
    import shlex

    (cell,), _ = resolve([("toy-quadratic", "gst(gap=1.2, tau=0.5)",
                           RunOptions(seed=3, samples=300, reference="exact"))], "cpu")
    command = rerun_command(cell, str(tmp_path))
    assert command == ("gradbench sweep --task toy-quadratic --estimator 'gst(gap=1.2, tau=0.5)' --samples 300 "
                       f"--seed 3 --reference exact --out {tmp_path}")
    result = runner.invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    assert cell_folders(tmp_path) == [cell.name]


def test_two_claims_on_one_cell_exclude_each_other(tmp_path):
    store = CellStore.open(tmp_path)
    store.prepare()
    with store.claim("c") as work:
        assert work.is_dir() and work.name.startswith(".c.")
        with pytest.raises(Busy):
            with store.claim("c"):
                pass
    with store.claim("c"):  # released when the first left
        pass


@pytest.mark.cpu_only(reason="bit-for-bit identity of repeated runs is promised on CPU only (docs/gpu.md)")
def test_jobs_2_gives_the_numbers_of_jobs_1(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert sweep(*GRID, "--threads", "1", "--out", str(one)).exit_code == 0
    result = sweep(*GRID, "--jobs", "2", "--out", str(two))
    assert result.exit_code == 0 and "8 run now (8 complete" in result.output, result.output
    assert cell_folders(one) == cell_folders(two)  # same identities
    pd.testing.assert_frame_equal(numbers(one), numbers(two))  # bit for bit


def test_pyarrow_filesystems(tmp_path):
    """A file:// URI is a local folder; another pyarrow filesystem gets uploads, sidecar last."""
    from pyarrow.fs import LocalFileSystem, SubTreeFileSystem

    result = sweep("-t", "toy-quadratic", "-e", "stgs", "--samples", "300", "--out", f"file://{tmp_path}/uri")
    assert result.exit_code == 0 and len(cell_folders(tmp_path / "uri")) == 1, result.output
    (tmp_path / "remote").mkdir()
    store = CellStore("bucket/prefix", SubTreeFileSystem(str(tmp_path / "remote"), LocalFileSystem()))
    store.prepare()
    (cell,), _ = resolve([("toy-quadratic", "stgs", RunOptions(samples=300))], "cpu")
    assert store.status(cell.name) is None
    assert run_cell(cell, store).status == "complete"
    assert store.status(cell.name) == "complete" and run_cell(cell, store).status == "skipped"
    folder = tmp_path / "remote" / "bucket" / "prefix" / cell.name
    assert sorted(p.name for p in folder.iterdir()) == ["_run.json", "metrics.parquet"]
    pd.testing.assert_frame_equal(numbers(folder), numbers(tmp_path / "uri"))


def test_bad_sweep_commands_fail_in_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "res"
    cases = [
        (["--estimator-grid", "tua=[1.0]"], "did you mean 'tau'"),
        (["--seed", "x"], "--seed 'x' is not an integer or a range"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--address", "auto"], "--address names a Ray cluster; add --backend ray"),
        (["--backend", "dask"], "unknown backend 'dask'"),
        (["--estimator-grid", "tau=1.0)"], "--estimator-grid 'tau=1.0)'"),
    ]
    for args, message in cases:
        result = sweep(*GRID, *args, "--out", str(out))
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_old_runs_and_sweep_cells_read_together(tmp_path):
    out = tmp_path / "res"
    assert runner.invoke(app, ["run", "-t", "toy-quadratic", "-e", "rloo", "--samples", "300", "--out",
                               str(out)]).exit_code == 0
    assert sweep("-t", "toy-quadratic", "-e", "stgs", "--samples", "300", "--out", str(out)).exit_code == 0
    assert set(pd.read_parquet(out)["estimator"]) == {"rloo", "stgs"}
    assert set(read_results(out)["estimator"]) == {"rloo", "stgs"}


# -- Ray ----------------------------------------------------------------------------------------
def test_ray_backend_gives_the_numbers_of_the_local_backend(tmp_path):
    pytest.importorskip("ray")
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    grid = [Grid(("toy-quadratic",), ("gst(gap=1.2)",), options={"seed": (0, 1), "samples": (300,),
                                                                   "device": ("cpu",)})]
    run_sweep(grid, SweepOptions(str(local), threads=1))
    summary = run_sweep(grid, SweepOptions(str(ray_out), jobs=2, backend="ray"))
    assert summary.all_complete and {o.status for o in summary.outcomes.values()} == {"complete"}
    assert cell_folders(local) == cell_folders(ray_out)
    pd.testing.assert_frame_equal(numbers(local), numbers(ray_out))
