"""``gradbench sweep``: every cell of one or more grids, resumable, inline, on worker processes or on Ray.

A sweep is planned in full before anything runs: grids are expanded and checked from
declarations (names, keys, types, ranges, compatibility, options), the backend is
started (it decides what ``--device auto`` means), then every task and estimator is
built to resolve the cells' identities (see :mod:`gradbench.sweep.grid`). Cells already
complete in the results folder are skipped; the others run, each published whole
when it ends (see :mod:`gradbench.sweep.cell_folders`), so a sweep killed at any moment is
resumed by running the same command again.
"""

from __future__ import annotations

import shlex
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from typing import Callable

from .cells import Outcome, cell_device, run_cell
from .cell_folders import CellStore
from ..errors import UserError
from .grid import Cell, Grid, expand, resolve
from ..options import RunOptions, set_threads

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs (none of it changes a cell's numbers or identity)."""

    out: str = "results"
    jobs: int = 1
    threads: int = 1  # torch threads per cell: float32 kernels round differently with other counts
    backend: str = "local"
    address: str | None = None
    gpus_per_cell: float = 1.0

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; choose local or ray")
        if not 1 <= self.jobs <= MAX_WORKERS:
            raise UserError(f"--jobs must be at least 1 and at most {MAX_WORKERS}, got {self.jobs}")
        if not 1 <= self.threads <= MAX_WORKERS:
            raise UserError(f"--threads must be at least 1 and at most {MAX_WORKERS}, got {self.threads}")
        if not 0 < self.gpus_per_cell <= 64:  # also refuses nan and inf
            raise UserError(f"--gpus-per-cell must be a number in (0, 64], got {self.gpus_per_cell}")
        if self.address and self.backend != "ray":
            raise UserError("--address names a Ray cluster; add --backend ray")


MAX_WORKERS = 1024  # processes or threads: more than any machine here has cores


@dataclass
class Summary:
    cells: list[Cell]
    complete_before: int = 0
    duplicates: int = 0
    previous: dict[str, str | None] = field(default_factory=dict)  # by cell id: status found before running
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by cell id, for cells run now
    interrupted: bool = False
    seconds: float = 0.0

    def with_status(self, status: str) -> list[tuple[Cell, Outcome]]:
        return [(c, self.outcomes[c.id]) for c in self.cells if c.id in self.outcomes and self.outcomes[c.id].status == status]

    @property
    def remaining(self) -> int:
        return len(self.cells) - self.complete_before - len(self.outcomes)

    @property
    def all_complete(self) -> bool:
        done = {"complete", "skipped"}
        return self.remaining == 0 and all(o.status in done for o in self.outcomes.values())


class LocalBackend:
    """Cells in this process (``--jobs 1``) or on worker processes."""

    def __init__(self, jobs: int, threads: int):
        self.jobs, self.threads = jobs, threads

    def auto_device(self) -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def run(self, cells: list[Cell], store: CellStore, on_outcome: Callable[[Cell, Outcome], None],
            progress_factory=None, console=None) -> None:
        if self.jobs > 1:
            from .workers import run_processes

            return run_processes(cells, store, self.jobs, self.threads, on_outcome)
        import torch

        before = torch.get_num_threads()
        set_threads(self.threads)
        try:
            for cell in cells:
                on_outcome(cell, run_cell(cell, store, cell_device(cell), progress_factory, console))
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        pass


def open_backend(options: SweepOptions):
    if options.backend == "ray":
        from .ray_backend import RayBackend

        return RayBackend(options.address, options.jobs if options.jobs > 1 else None, options.threads,
                          options.gpus_per_cell)
    return LocalBackend(options.jobs, options.threads)


def plan(grids: list[Grid], backend) -> tuple[list[Cell], int]:
    """Every distinct cell of ``grids`` (checked from declarations first, then resolved)."""
    triples = [t for grid in grids for t in expand(grid)]
    return resolve(triples, backend.auto_device())


def rerun_command(cell: Cell, out: str) -> str:
    """A ``gradbench sweep`` command that runs just this cell into the same folder."""
    parts = ["gradbench", "sweep", "--task", cell.task, "--estimator", cell.estimator]
    defaults = RunOptions()
    for f in fields(RunOptions):
        value = getattr(cell.options, f.name)
        if f.name != "out" and value != getattr(defaults, f.name):
            parts += [f"--{f.name.replace('_', '-')}", str(value)]
    return shlex.join(parts + ["--out", out])


def run_sweep(grids: list[Grid], options: SweepOptions, console=None, dry_run: bool = False,
              show: Callable[[Summary, CellStore], None] | None = None) -> Summary:
    """Plan and run a sweep; returns what happened (also when interrupted: ``summary.interrupted``).

    ``show(summary, store)``, when given, is called once the cells are known (e.g. to
    print them for a dry run).
    """
    options.check()
    for grid in grids:
        expand(grid)  # every declarative check before a backend (Ray) starts
    store = CellStore.open(options.out)
    backend = open_backend(options)
    try:
        cells, duplicates = plan(grids, backend)
        cuda = [c for c in cells if c.device == "cuda"]
        if cuda and isinstance(backend, LocalBackend) and backend.auto_device() != "cuda":
            raise UserError(f"{len(cuda)} cells ask for --device cuda but this machine has no CUDA device; "
                            "use --device cpu or auto (or --backend ray on a cluster with GPUs)")
        status = {c.id: store.status(c.name) for c in cells}
        todo = [c for c in cells if status[c.id] != "complete"]
        summary = Summary(cells, len(cells) - len(todo), duplicates, status)
        if show is not None:
            show(summary, store)
        if dry_run or not todo:
            return summary
        store.prepare()
        start = time.perf_counter()
        progress = _progress(console)
        with progress:
            bar = progress.add_task("sweep", total=len(todo), counts=_counts(summary))
            inner = (lambda: nullcontext(progress)) if console is not None and console.is_terminal else None

            def on_outcome(cell: Cell, outcome: Outcome) -> None:
                summary.outcomes[cell.id] = outcome
                progress.update(bar, advance=1, counts=_counts(summary))
                for task_id in list(progress.task_ids):  # a finished cell's own bars
                    if task_id != bar:
                        progress.remove_task(task_id)
                if console is not None:
                    console.print(_line(cell, outcome, len(summary.outcomes), len(todo)), markup=False,
                                  highlight=False, soft_wrap=True)

            try:
                if isinstance(backend, LocalBackend):
                    backend.run(todo, store, on_outcome, inner, console)
                else:
                    backend.run(todo, store, on_outcome)
            except KeyboardInterrupt:
                summary.interrupted = True
        summary.seconds = time.perf_counter() - start
        return summary
    finally:
        backend.close()


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if console is None:
        return Progress(disable=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("left"),
                    TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)


def _counts(summary: Summary) -> str:
    statuses = [o.status for o in summary.outcomes.values()]
    done = statuses.count("complete") + statuses.count("skipped")
    return f"done {done} · failed {statuses.count('failed')} · remaining {summary.remaining}"


def _line(cell: Cell, outcome: Outcome, n: int, total: int) -> str:
    head = f"[{n}/{total}] {outcome.status}: {cell.label}"
    if outcome.status == "failed":
        return f"{head}: {outcome.error}"
    if outcome.status == "busy":
        return f"{head} (another process is running it)"
    return f"{head} ({outcome.seconds:.1f} s)" if outcome.status == "complete" else head
