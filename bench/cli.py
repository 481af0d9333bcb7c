"""The ``gradbench`` command line.

Bad input of any kind (unknown names, bad values, missing files, usage mistakes)
ends with one line on stderr, ``error: ...``, and exit code 2, before anything is
computed or written. Heavy imports (torch) happen inside commands, so ``list`` and
``--help`` stay fast.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

from . import __version__
from .capabilities import estimator_lines, task_lines
from .errors import UserError, did_you_mean
from .numbers import format_number
from .output import (CHECK_FORMATS, FORMAT_HELP, FORMATS, Check, Column, Joined, Mark, Number, Printer, Table,
                     check_format, github, junit)
from .options import OPTION_NAMES, THREADS, RunOptions, cli_fields, threads_set
from .registry import compatibility, estimators, tasks

console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class _OneLineErrors(TyperGroup):
    """Run commands without click's standalone handling, so every error is one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        previous = _on_sigterm(_terminate)
        try:
            rv = super().main(args, prog_name or "gradbench", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
            sys.stdout.flush()  # here, not at exit: a full disk or closed pipe is reported like any error
        except UserError as exc:
            code = _fail(str(exc))
        except TyperException as exc:  # usage errors: missing options, bad integers, unknown commands
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `gradbench`: the help was printed
                code = 0
            else:
                code = _fail(exc.format_message() if hasattr(exc, "format_message") else str(exc))
        except (Abort, KeyboardInterrupt):
            err_console.print("interrupted")
            code = 130
        except OSError as exc:  # a fault of the machine, not a bug: unwritable folder, full disk, closed stdout
            code = _fail(_os_message(exc))
        except MemoryError:
            code = _fail("out of memory; give smaller sizes (--samples, --chunk-size, task or estimator sizes)")
        finally:
            _on_sigterm(previous)
        if Terminated.received:  # typer turns the interrupt into exit code 130; a kill's convention is 143
            Terminated.received = False
            code = 143
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str) -> int:
    try:
        err_console.print(f"error: {' '.join(message.split())}", markup=False)
    except OSError:  # stderr is gone too: the exit code is all that is left
        pass
    _silence_stdout()
    return 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, ``kill PID``): handled as Ctrl-C is, so every run records it."""

    received = False


def _terminate(signum, frame):
    Terminated.received = True
    raise Terminated()


def _on_sigterm(handler):
    """Install ``handler`` for SIGTERM; returns the previous one (None off the main thread)."""
    import signal
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    if exc.filename is None:
        return f"cannot write the output: {what} (standard output, or a file it was writing)"
    return f"cannot use {exc.filename}: {what}; choose another path or free space"


def _silence_stdout() -> None:
    """Point stdout at /dev/null if it cannot take what is buffered, so exit adds no traceback."""
    import os

    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark gradient estimators for discrete random variables: bias and variance against exact "
    "or high-sample references, stored as tidy Parquet.",
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
):
    if version:
        console.print(f"gradbench {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())


def _run_options(skip: tuple[str, ...]):
    """Add a flag for every field of :class:`RunOptions` (but ``skip``) to a command taking ``**given_options``.

    Name, type, default and help come from gradbench.options, the one definition; typer reads
    the command's signature, so the flags are appended to it.
    """
    hints = typing.get_type_hints(RunOptions)

    def add(command):
        signature = inspect.signature(command, eval_str=True)  # typer needs the Annotated objects, not strings
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = {}
        for f in cli_fields():
            if f.name in skip:
                continue
            kind = hints[f.name]
            inner = [a for a in typing.get_args(kind) if a is not type(None)]
            kind = Optional[inner[0]] if inner and len(typing.get_args(kind)) == 2 else kind  # X | None -> Optional[X]
            added[f.name] = Annotated[kind, typer.Option(help=f.metadata["help"])]
        params = own + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_FIELD_DEFAULTS[name],
                                          annotation=hint) for name, hint in added.items()]
        command.__signature__ = signature.replace(parameters=params)
        command.__annotations__ = {**typing.get_type_hints(command, include_extras=True), **added}
        return command

    return add


_FIELD_DEFAULTS = {f.name: f.default for f in cli_fields()}
_OPTION_HELP = {f.name: f.metadata["help"] for f in cli_fields()}


@app.command()
@_run_options(skip=("out",))
def run(
    ctx: typer.Context,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help='Task spec: NAME or NAME(key=value, ...), e.g. '
                                                '"toy-bernoulli(dim=5)".')] = None,
    estimator: Annotated[Optional[list[str]], typer.Option("--estimator", "-e", help='Estimator spec, repeatable, '
                                                           'e.g. "gst(gap=1.2, tau=0.5)".')] = None,
    suite: Annotated[Optional[str], typer.Option(help="Run a named suite of runs instead of --task/--estimator "
                                                 "(e.g. ci); options given here override the suite's.")] = None,
    suite_file: Annotated[Optional[Path], typer.Option(help="TOML file of suites (default: the built-in "
                                                       "suites.toml).")] = None,
    out: Annotated[Path, typer.Option(help="Results folder; each run adds its own subfolder.")] = Path("results"),
    threads: Annotated[int, typer.Option(help=THREADS.help)] = THREADS.default,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "table",
    **given_options,  # the RunOptions flags (gradbench.options), added by _run_options
):
    """Measure estimators' gradient bias and variance on a task (or a suite of runs) and store the results."""
    from .run import execute, prepare
    from .summary import run_tables

    THREADS.validate(threads)
    check_format(fmt)
    options = RunOptions(out=str(out), **given_options)
    if suite is None:
        if suite_file is not None:  # silently ignored before: the user meant a suite from it
            raise UserError("--suite-file names where suites are; add --suite NAME")
        if task is None:
            raise UserError("Missing option '--task': give a task spec (or --suite NAME); see 'gradbench list tasks'")
        if not estimator:
            raise UserError("Missing option '--estimator': give at least one estimator spec; "
                            "see 'gradbench list estimators'")
        plans = [prepare(task, estimator, options)]
    else:
        if task is not None or estimator:
            raise UserError("--suite names its own tasks and estimators; drop --task and --estimator")
        from .sweep.suites import load_suite

        given = {name: value for name, value in given_options.items() if _given(ctx, name)}
        runs = load_suite(suite, suite_file, str(out)).with_options(**given).runs
        plans = [prepare(r.task, list(r.estimators), r.options) for r in runs]  # all checked before any runs
    failed_runs, run_dirs = [], []
    with threads_set(threads), Printer(fmt, console, err_console) as printer:
        for plan in plans:
            result = execute(plan, _progress, err_console)
            run_dirs.append(result.run_dir)
            if result.status == "failed":
                failed_runs.append(result)
            tables, failures = run_tables(result)
            for table in tables:
                printer.table(table)
            for line in failures:
                printer.line(line, style="red")
            ref = result.reference
            if ref is not None:
                detail = "exact" if ref.kind == "exact" else f"REINFORCE-LOO over {ref.samples:,} draws"
                printer.line(f"reference: {detail} · results: {result.run_dir}")
            else:
                printer.line(f"results: {result.run_dir}")
            printer.field("runs", {"run_id": result.run_id, "results": str(result.run_dir), "status": result.status,
                                   "reference": None if ref is None else ref.kind,
                                   "reference_samples": None if ref is None else ref.samples})
        where = run_dirs[0] if len(run_dirs) == 1 else out
        printer.line("figures and tables (report/index.html):")
        printer.line(f"  gradbench report {where}")
    for result in failed_runs:  # recorded as failed rows, never averaged; the exit code says so too
        err_console.print(f"failed: {result.error} (run {result.run_dir})", markup=False, soft_wrap=True)
    return 1 if failed_runs else 0


@app.command()
@_run_options(skip=("out", "seed"))
def sweep(
    ctx: typer.Context,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Task spec, repeatable: every task is "
                                                      "crossed with every estimator.")] = None,
    estimator: Annotated[Optional[list[str]], typer.Option("--estimator", "-e", help='Estimator spec, repeatable '
                                                           '("*": every estimator that fits the task).')] = None,
    seed: Annotated[Optional[list[str]], typer.Option(help="Seed, repeatable, or a range A..B (inclusive), "
                                                      "e.g. --seed 0..9.")] = None,
    estimator_grid: Annotated[Optional[list[str]], typer.Option(help='Values crossed into every estimator spec, '
                                                                'e.g. "tau=[1.0, 0.5]"; repeatable.')] = None,
    task_grid: Annotated[Optional[list[str]], typer.Option(help='Values crossed into every task spec, e.g. '
                                                           '"epochs=[5, 10]"; repeatable.')] = None,
    suite: Annotated[Optional[str], typer.Option(help="Sweep a named suite (e.g. gst-table, ci) instead of "
                                                 "--task/--estimator; options given here override its values.")] = None,
    suite_file: Annotated[Optional[Path], typer.Option(help="TOML file of suites (default: the built-in "
                                                       "suites.toml).")] = None,
    out: Annotated[str, typer.Option(help="Results folder or pyarrow URI (file://, s3://, ...); one subfolder "
                                     "per cell. Cells complete there are skipped.")] = "results",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Cells run at once: worker processes (local), or "
                                      "the CPUs of a local Ray instance.")] = 1,
    threads: Annotated[int, typer.Option(help=THREADS.help)] = THREADS.default,
    backend: Annotated[str, typer.Option(help="local (this machine) or ray (pip install 'gradbench\\[ray]').")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster to join (e.g. auto, or ray://head:10001); "
                                                   "default: start a local Ray instance.")] = None,
    gpus_per_cell: Annotated[float, typer.Option(help="GPUs a Ray task asks for when its cell runs on CUDA "
                                                 "(a fraction shares a GPU).")] = 1.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cells and their status; run nothing.")] = False,
    **given_options,  # the RunOptions flags but --seed (gradbench.options), added by _run_options
):
    """Run a grid of cells (tasks × estimators × crossed parameters × seeds), resumably, in parallel or on Ray."""
    import shlex

    from .sweep.grid import Grid
    from .sweep.driver import SweepOptions, rerun_command, run_sweep

    given = {name: value for name, value in given_options.items() if _given(ctx, name)}
    seeds = _seeds(seed or [])
    if seeds:
        given["seed"] = seeds
    crossed = {"task_grid": _grid_values("--task-grid", task_grid or []),
               "estimator_grid": _grid_values("--estimator-grid", estimator_grid or [])}
    if suite is None:
        if suite_file is not None:  # silently ignored before: the user meant a suite from it
            raise UserError("--suite-file names where suites are; add --suite NAME")
        if not task:
            raise UserError("Missing option '--task': give a task spec (or --suite NAME); see 'gradbench list tasks'")
        if not estimator:
            raise UserError("Missing option '--estimator': give at least one estimator spec; "
                            "see 'gradbench list estimators'")
        options = {k: v if isinstance(v, list) else [v] for k, v in given.items()}
        grids = [Grid(tuple(task), tuple(estimator), crossed["task_grid"], crossed["estimator_grid"],
                      {k: tuple(v) for k, v in options.items() if k in OPTION_NAMES})]
    else:
        if task or estimator:
            raise UserError("--suite names its own tasks and estimators; drop --task and --estimator")
        from dataclasses import replace

        from .sweep.suites import load_grids

        grids = [replace(g, options={**g.options, **{k: tuple(v) if isinstance(v, list) else (v,)
                                                     for k, v in given.items()}},
                         task_grid={**g.task_grid, **crossed["task_grid"]},
                         estimator_grid={**g.estimator_grid, **crossed["estimator_grid"]})
                 for g in load_grids(suite, suite_file)[1]]
    sweep_options = SweepOptions(out, jobs, threads, backend, address, gpus_per_cell)

    def show(summary, store) -> None:
        note = f" ({summary.duplicates} duplicate configurations given once)" if summary.duplicates else ""
        err_console.print(f"{len(summary.cells)} cells{note}: {summary.complete_before} complete in {out}, "
                          f"{len(summary.cells) - summary.complete_before} to run", highlight=False, soft_wrap=True)
        if dry_run:
            table = Table("cells", f"sweep into {out}", [Column(c) for c in ("cell", "task", "estimator")]
                          + [Column("seed", numeric=True), Column("device"), Column("status")])
            for c in summary.cells:
                table.add(c.name, c.task, c.estimator, c.options.seed, c.device, summary.previous.get(c.id) or "to run")
            Printer("table", console).table(table)

    result = run_sweep(grids, sweep_options, err_console, dry_run, show)
    if dry_run:
        return 0
    command = shlex.join(["gradbench", *sys.argv[1:]]) if sys.argv[1:2] == ["sweep"] else "the same command"
    failed, busy = result.with_status("failed"), result.with_status("busy")
    ran = len(result.outcomes)
    console.print(f"{len(result.cells)} cells: {result.complete_before} complete before, {ran} run now "
                  f"({len(result.with_status('complete'))} complete, {len(failed)} failed, {len(busy)} busy), "
                  f"{result.remaining} not run · {result.seconds:.1f} s · results: {out}", highlight=False, soft_wrap=True)
    for cell, outcome in failed:
        console.print(f"failed: {cell.label}: {outcome.error}\n  re-run it: {rerun_command(cell, out)}",
                      markup=False, highlight=False, soft_wrap=True)
    if busy:
        console.print(f"{len(busy)} cells were being run by another process; run the command again after it ends",
                      highlight=False)
    if result.interrupted:
        err_console.print(f"interrupted: finished cells are kept; resume with: {command}", markup=False, soft_wrap=True)
        return 130
    if failed:
        console.print(f"re-run every failed or missing cell (complete ones are skipped): {command}", markup=False,
                      highlight=False, soft_wrap=True)
    return 0 if result.all_complete else 1


def _seeds(values: list[str]) -> list[int]:
    """Seeds from "N" and "A..B" texts, each checked (range and count) before any list is built."""
    from .options import check_seed
    from .sweep.grid import MAX_CELLS

    seeds = []
    for text in values:
        first, sep, last = text.partition("..")
        try:
            low, high = (int(first), int(last)) if sep else (int(text), int(text))
        except ValueError:
            raise UserError(f"--seed {text!r} is not an integer or a range A..B (e.g. 0..9)") from None
        check_seed(low)
        check_seed(high)
        if high < low:
            raise UserError(f"--seed {text!r} is an empty range; write A..B with A ≤ B")
        if high - low + 1 + len(seeds) > MAX_CELLS:
            raise UserError(f"--seed {text!r} gives {high - low + 1:,} seeds (at most {MAX_CELLS:,} in one sweep); "
                            "split the range over several sweeps into the same --out")
        seeds += range(low, high + 1)
    return seeds


def _grid_values(option: str, texts: list[str]) -> dict[str, tuple]:
    """"tau=[1.0, 0.5], k=[10, 100]" -> {"tau": (1.0, 0.5), "k": (10, 100)}."""
    from .spec import parse_spec

    out: dict[str, tuple] = {}
    for text in texts:
        try:
            kwargs = parse_spec(f"grid({text})").kwargs
        except UserError as exc:
            raise UserError(f"{option} {text!r}: write key=[value, ...]: {exc}") from None
        for key, value in kwargs.items():
            out[key] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return out


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was typed on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _progress():
    from .progress import RunProgress

    return RunProgress(err_console)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="Results: a results folder (any runs, any tasks), a run folder "
                                            "or a .parquet file.")],
    out: Annotated[Path, typer.Option(help="Report folder: index.html, figures/ (PNG and SVG), tables/ "
                                      "(CSV, Markdown, LaTeX).")] = Path("report"),
):
    """Write figures, summary tables and one self-contained HTML page for a set of results."""
    from .reports.report import write_report

    made = write_report(results, out)
    console.print(f"{len(made.figures)} figures ({', '.join(made.figures) or 'none'}) · {out / 'index.html'}")


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="Baseline results: a results folder, a run folder or a .parquet file.")],
    current: Annotated[Path, typer.Argument(help="Current results, matched key by key against the baseline.")],
    max_ratio: Annotated[float, typer.Option(help="A regression must be worse by more than this factor "
                                             "(current/baseline; baseline/current for accuracy).")] = 1.25,
    alpha: Annotated[float, typer.Option(help="Family-wise false-alarm rate: one-sided tests, Holm-corrected over "
                                         "all keys compared.")] = 0.01,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", "-m", help="Metric to compare, repeatable "
                      "(default: variance, bias_norm, mse and training curves such as test/neg_elbo).")] = None,
    timing_ratio: Annotated[Optional[float], typer.Option(help="Also compare timing metrics, with this factor "
                                                          "(they vary with the machine's load; try 3).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List every compared metric, not only changes.")] = False,
    csv: Annotated[Optional[Path], typer.Option(help="Write the full comparison to this CSV file.")] = None,
    junit_file: Annotated[Optional[Path], typer.Option("--junit", help="Also write a JUnit XML report to this file "
                                                       "(one test per compared metric; a regression fails it).")] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP[:-1] + ", junit (the JUnit XML report) or github "
                                     "(GitHub Actions: an annotation per regression, then the table; the Markdown "
                                     "table is appended to $GITHUB_STEP_SUMMARY when set).")] = "table",
):
    """Compare two results; exit 1 when a metric regressed (worse by the factor, and significantly), else 0."""
    import os

    from .reports.compare import compare as run_compare
    from .store import atomic_write_bytes, read_results

    check_format(fmt, FORMATS + CHECK_FORMATS)
    for flag, path in (("--csv", csv), ("--junit", junit_file)):
        if path is not None and not path.parent.is_dir():
            raise UserError(f"cannot write {flag} {path}: the folder {path.parent} does not exist; create it first")
    result = run_compare(read_results(baseline), read_results(current), metrics=tuple(metric or ()),
                         max_ratio=max_ratio, alpha=alpha, timing_ratio=timing_ratio)
    title = f"{baseline} → {current}"
    checks = _comparison_checks(result)
    if fmt == "junit":
        console.file.write(junit("gradbench compare", checks, title))
    else:
        if fmt == "github":
            console.file.write(github(checks))
        with Printer("table" if fmt == "github" else fmt, console, err_console) as printer:
            _print_comparison(printer, result, show_all, title)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if fmt == "github" and summary:
            import io

            from rich.console import Console as Sink

            page = Sink(file=io.StringIO(), width=200)
            with Printer("markdown", page, page) as printer:
                _print_comparison(printer, result, show_all, title)
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(page.file.getvalue())
    if csv is not None:
        atomic_write_bytes(csv, result.rows.to_csv(index=False).encode())  # no partial file on a full disk
    if junit_file is not None:
        atomic_write_bytes(junit_file, junit("gradbench compare", checks, title).encode())
    if result.exit_code:
        err_console.print(f"{len(result.regressions)} regression(s)")
    return result.exit_code


def _print_comparison(printer: Printer, result, show_all: bool, title: str) -> None:
    table = _comparison_table(result, show_all or not printer.human, title)
    if table.rows or not printer.human:
        printer.table(table)
    else:
        printer.line("no metric changed beyond its noise")
    counts = result.rows["verdict"].value_counts()
    printer.line(f"{len(result.rows)} metrics compared: " + ", ".join(f"{n} {v}" for v, n in counts.items())
                 + f" (max ratio {result.max_ratio}, family-wise alpha {result.alpha})")
    if counts.get("untested"):
        printer.line("untested: numbers that depend on the seed (training, stateful estimators) need ≥ 2 seeds a "
                     "side, or the same seeds for a stateful estimator on a fixed task (--all lists them)")
    if len(result.skipped):
        reasons = result.skipped.groupby(["reason", "task_label", "estimator_label"]).size()
        printer.line(f"skipped {len(result.skipped)} metrics:")
        for (reason, task_label, est), n in list(reasons.items())[:20]:
            printer.line(f"  {task_label} · {est}: {n} {reason}")
        if len(reasons) > 20:
            printer.line(f"  … and {len(reasons) - 20} more")
    printer.field("exit_code", result.exit_code)


@app.command()
def verify(
    spec: Annotated[str, typer.Argument(help='Estimator to verify: a registered or plugin spec ("gst(gap=1.2)"), '
                                        "or path/to/file.py:ClassName (imported from the file, no install).")],
    against: Annotated[Optional[list[str]], typer.Option(help="Baseline estimator spec, repeatable (default: "
                                                         "reinforce, rloo at equal evaluations, and stgs, gst "
                                                         "for an estimator using df/dx).")] = None,
    task: Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Only this task (all its "
                                                      "configurations), repeatable (default: every fixed task "
                                                      "with an exact gradient that the estimator fits).")] = None,
    budget: Annotated[str, typer.Option(help="quick (≤ 2 minutes per estimator on 2 cores) or full (25× the "
                                        "estimates).")] = "quick",
    alpha: Annotated[float, typer.Option(help="Family-wise false-alarm rate of the 'unbiased' test (Holm over "
                                         "the tasks).")] = 0.01,
    seed: Annotated[int, typer.Option(help=_OPTION_HELP["seed"])] = _FIELD_DEFAULTS["seed"],
    out: Annotated[Path, typer.Option(help="Results folder; the verification adds one run folder (Parquet rows, "
                                      "_verdict.md, _verdict.html).")] = Path("results"),
    device: Annotated[str, typer.Option(help=_OPTION_HELP["device"])] = _FIELD_DEFAULTS["device"],
    dtype: Annotated[Optional[str], typer.Option(help=_OPTION_HELP["dtype"])] = _FIELD_DEFAULTS["dtype"],
    threads: Annotated[int, typer.Option(help=THREADS.help)] = THREADS.default,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP[:-1] + ", junit (a JUnit XML report: one test "
                                     "per task check) or github (an annotation per contradiction, then the "
                                     "tables).")] = "table",
):
    """Check an estimator's declarations on every exact fixed task it fits; exit 1 naming any contradiction."""
    from .verify import VerifyOptions, plan
    from .verify import verify as run_verify
    from .verify_card import CARD_HTML, CARD_MD, bias_table, ratio_table, verdict_line

    options = VerifyOptions(budget, alpha, seed, str(out), tuple(against) if against is not None else None,
                            tuple(task) if task else None, device, dtype)
    THREADS.validate(threads)
    check_format(fmt, FORMATS + CHECK_FORMATS)
    plan(spec, options)  # every check before anything is measured or written
    with threads_set(threads), _progress() as progress:
        verdict = run_verify(spec, options, err_console, progress)
    card = f"card: {verdict.run_dir / CARD_MD} · {verdict.run_dir / CARD_HTML} · {verdict.seconds:.1f} s"
    checks = [Check(f"{verdict.label} · {c.task}", c.group or "–", "failed" if c.problems or c.status != "ok"
                    else "passed", "; ".join(c.problems) or (f"the measurement {c.status}: {c.message}"
                                                             if c.status != "ok" else "every declaration holds"))
              for c in verdict.checks]
    if fmt == "junit":
        console.file.write(junit("gradbench verify", checks, verdict.label))
        return verdict.exit_code
    if fmt == "github":
        console.file.write(github(checks))
    with Printer("table" if fmt == "github" else fmt, console, err_console) as printer:
        for name, title, (head, body) in (
                ("bias", f"verify {verdict.label}: bias and declarations", bias_table(verdict)),
                ("variance", f"verify {verdict.label}: variance vs baselines", ratio_table(verdict))):
            printer.table(_card_table(name, title, head, body))
        printer.line(verdict_line(verdict), style=None if verdict.holds else "red")
        for problem in verdict.problems:
            printer.line(f"  contradicted: {problem}")
        printer.line(card)
        printer.field("exit_code", verdict.exit_code)
    return verdict.exit_code


def _card_table(name: str, title: str, head: list[str], body: list[list[str]]) -> Table:
    """A table of the verdict card (gradbench.verify_card): its cells are already formatted numbers and words."""
    import re

    keys: list[str] = []
    for i, h in enumerate(head):  # machine keys from the headings: "relative bias [95%]" -> relative_bias
        key = re.sub(r"[^a-z0-9]+", "_", h.lower().replace("[95%]", "")).strip("_") or f"column_{i}"
        keys.append(key if key not in keys else f"{key}_{i}")
    columns = [Column(k, h) for k, h in zip(keys, head)]
    table = Table(name, title, columns, keys=2)
    styles = {"contradicted": "red", "holds": "green"}
    for row in body:
        last = row[-1]
        style = "red" if last.startswith("failed") else styles.get(last)
        table.add(*row[:-1], Mark(last, style) if style else last)
    return table


_QUIET_VERDICTS = ("identical", "same", "untested")


def _comparison_table(result, show_all: bool, title: str) -> Table:
    table = Table("comparison", title, [Column("task"), Column("estimator"), Column("group"),
                                        Column("step", numeric=True), Column("metric"),
                                        Column("baseline", numeric=True), Column("current", numeric=True),
                                        Column("ratio", numeric=True), Column("p_holm", "p (Holm)", numeric=True),
                                        Column("verdict")], keys=3)
    for r in result.rows.itertuples(index=False):
        if not show_all and r.verdict in _QUIET_VERDICTS:
            continue
        colour = _VERDICT_COLOURS.get(r.verdict)
        table.add(r.task_label, r.estimator_label, r.param_group or "–", int(r.step), r.metric,
                  Number(r.baseline, r.baseline - r.half_b, r.baseline + r.half_b),
                  Number(r.current, r.current - r.half_c, r.current + r.half_c), Number(r.ratio),
                  Number(r.p if r.verdict not in ("identical", "untested") else None),
                  Mark(r.verdict, colour) if colour else r.verdict)
    return table


_VERDICT_COLOURS = {"regression": "red", "now failing": "red", "worse": "yellow", "improvement": "green",
                    "better": "green", "now ok": "green"}
_CHECK_OUTCOMES = {"regression": "failed", "now failing": "failed", "worse": "warning", "untested": "skipped",
                   "at rounding floor": "skipped"}


def _comparison_checks(result) -> list[Check]:
    """One check per compared metric: a regression fails it; "worse" (significant, within the factor) warns."""
    checks = []
    for r in result.rows.itertuples(index=False):
        where = f"{r.task_label} · {r.estimator_label}"
        name = " ".join(x for x in (r.param_group, r.metric, f"step {r.step}" if r.step else "") if x)
        base, cur = str(Number(r.baseline, r.baseline - r.half_b, r.baseline + r.half_b)), \
            str(Number(r.current, r.current - r.half_c, r.current + r.half_c))
        if r.metric == "status":
            message = f"{where}: the measurement {'now fails' if r.verdict == 'now failing' else 'now succeeds'}"
        else:
            change = (f"{format_number(r.ratio)}× {'worse' if r.ratio > 1 else 'better'}"
                      if r.ratio == r.ratio else "changed")
            message = (f"{where}: {name} {r.verdict}: {change} (baseline {base} → current {cur}; "
                       f"p (Holm) {format_number(r.p)}; limit {result.max_ratio}×, alpha {result.alpha})")
            if r.verdict in ("identical", "same", "untested", "at rounding floor"):
                message = f"{where}: {name} {r.verdict} (baseline {base} → current {cur})"
        checks.append(Check(where, name, _CHECK_OUTCOMES.get(r.verdict, "passed"), message))
    return checks


@app.command("list")
def list_(
    what: Annotated[Optional[str], typer.Argument(help="estimators or tasks (default: both).")] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "table",
):
    """List registered estimators and tasks: parameters, defaults and capabilities."""
    kinds = {"estimators": "estimator", "tasks": "task", "estimator": "estimator", "task": "task"}
    if what is not None and what not in kinds:
        raise UserError(f"cannot list {what!r}{did_you_mean(what, ['estimators', 'tasks'])} (choose estimators or tasks)")
    check_format(fmt)
    chosen = [kinds[what]] if what else ["estimator", "task"]
    with Printer(fmt, console, err_console) as printer:
        if "estimator" in chosen:
            printer.table(_estimator_table())
        if "task" in chosen:
            printer.table(_task_table())


def _params_lines(info) -> list[str]:
    parts = []
    for p in info.params.values():
        rng = p.describe_range()
        parts.append(f"{p.name}={p.default!r}" + (f" ({rng})" if rng else ""))
    return parts


def _estimator_table() -> Table:
    table = Table("estimators", "estimators", [Column("name"), Column("description"), Column("parameters"),
                                                Column("capabilities"), Column("fits_tasks", "fits tasks")],
                  show_lines=True)
    task_infos = [tasks.info(n) for n in tasks.names()]
    for name in estimators.names():
        info = estimators.info(name)
        fits = [t.name for t in task_infos if compatibility(info, t)[0]]
        table.add(name, info.description, _params_lines(info), estimator_lines(info.capabilities),
                  Joined(tuple(fits)))
    return table


def _task_table() -> Table:
    table = Table("tasks", "tasks", [Column("name"), Column("description"), Column("parameters"),
                                      Column("capabilities")], show_lines=True)
    for name in tasks.names():
        info = tasks.info(name)
        table.add(name, info.description, _params_lines(info), task_lines(info.capabilities))
    return table


@app.command()
def regenerate(
    only: Annotated[Optional[list[str]], typer.Option(help="A part to regenerate: catalog (catalog.json, "
                                                       "docs/estimators.md), tables (docs/results/*.md, minutes) or "
                                                       "baseline (tests/baselines/ci, minutes); repeatable. "
                                                       "Default: all.")] = None,
    check: Annotated[bool, typer.Option(help="Compare with what is committed and write nothing; exit 1 if stale.")] = False,
):
    """Regenerate everything derived from the code (after adding or changing an estimator or task)."""
    from .regenerate import PARTS, main as regenerate_main

    for part in only or []:
        if part not in PARTS:
            raise UserError(f"unknown part {part!r} for --only{did_you_mean(part, PARTS)} (choose {', '.join(PARTS)})")
    args = [a for part in only or [] for a in ("--only", part)] + (["--check"] if check else [])
    raise typer.Exit(regenerate_main(args))


class _TaskCommands(TyperGroup):
    """`gradbench data`: the sub-commands tasks declare (``Task.data_commands``), found through the registry.

    Names come from the tasks' descriptions (the catalog for built-ins), so the core names no
    task; a command's module is imported only when that command (or this group's help) runs.
    """

    def _targets(self) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for task in tasks.names():
            for name, target in tasks.info(task).commands.items():
                if name in found:
                    raise UserError(f"tasks {found[name][0]} and {task} both declare `gradbench data {name}`; "
                                    "rename one of the commands")
                found[name] = (task, target)
        return found

    def list_commands(self, ctx) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._targets()))

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        target = self._targets().get(name)
        if command is not None or target is None:
            return command
        module, _, attr = target[1].partition(":")
        function = getattr(importlib.import_module(module), attr)
        holder = typer.Typer()
        holder.command(name)(function)
        return typer.main.get_command(holder)  # one command: typer returns it, not a group


data_app = typer.Typer(cls=_TaskCommands, no_args_is_help=True, help="Generate and check task datasets "
                       "(the sub-commands are contributed by the tasks).")
app.add_typer(data_app, name="data")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
