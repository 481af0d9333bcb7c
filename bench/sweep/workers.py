"""Worker processes for ``gradbench sweep --jobs N`` on one machine.

N ``spawn``-started processes, each given one cell at a time, each with ``threads`` torch
threads (and GPU, round robin, when cells run on CUDA). The parent knows which
cell every worker holds, so a worker that dies (killed, out of memory) fails exactly
that cell, which is recorded, and a fresh worker takes its place. On SIGINT the
parent interrupts its workers (their cells publish nothing) and stops them. Workers
exit on their own when the parent disappears, even after a SIGKILL.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..options import set_threads
from .cells import Outcome, cell_device, record_failure, run_cell
from .cell_folders import CellStore
from .grid import Cell


@dataclass
class _Worker:
    index: int
    process: Any
    inbox: Any
    cell: Cell | None = None


def run_processes(cells: list[Cell], store: CellStore, jobs: int, threads: int,
                  on_outcome: Callable[[Cell, Outcome], None]) -> None:
    """Run ``cells`` on ``jobs`` worker processes; call ``on_outcome`` in this process as each ends."""
    context = mp.get_context("spawn")
    results = context.Queue()
    pending = deque(cells)
    workers: dict[int, _Worker] = {}

    def start(index: int) -> None:
        inbox = context.Queue()
        process = context.Process(target=_worker_main, args=(index, threads, inbox, results, store, os.getpid()),
                                  name=f"gradbench-worker-{index}", daemon=True)
        process.start()
        workers[index] = _Worker(index, process, inbox)

    try:
        for index in range(min(jobs, len(cells))):
            start(index)
        while pending or any(w.cell is not None for w in workers.values()):
            for worker in workers.values():
                if worker.cell is None and pending:
                    worker.cell = pending.popleft()
                    worker.inbox.put(worker.cell)
            try:
                index, outcome = results.get(timeout=0.5)
            except queue.Empty:
                for worker in list(workers.values()):
                    if worker.cell is not None and not worker.process.is_alive():
                        cell, worker.cell = worker.cell, None
                        code = worker.process.exitcode
                        error = (f"worker process died (exit code {code}{_signal_name(code)}) while running it; "
                                 "killed, or out of memory?")
                        on_outcome(cell, record_failure(store, cell, error))
                        start(worker.index)
                continue
            cell, workers[index].cell = workers[index].cell, None
            on_outcome(cell, outcome)
    except KeyboardInterrupt:
        for worker in workers.values():
            if worker.cell is not None and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGINT)  # their cells stop and publish nothing
        raise
    finally:
        _stop(workers.values())


def _stop(workers) -> None:
    for worker in workers:
        if worker.process.is_alive():
            try:
                worker.inbox.put(None)
            except (OSError, ValueError):
                pass
    deadline = time.monotonic() + 10
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join(5)


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return ""
    try:
        return f", {signal.Signals(-code).name}"
    except ValueError:
        return ""


def _worker_main(index: int, threads: int, inbox, results, store: CellStore, parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    set_threads(threads)
    try:
        while (cell := inbox.get()) is not None:
            try:
                outcome = run_cell(cell, store, cell_device(cell, index))
            except Exception as exc:  # publishing failed (disk full, permissions): report it, keep serving
                outcome = Outcome(cell.id, "failed", 0.0, f"{type(exc).__name__}: {exc}")
            results.put((index, outcome))
    except KeyboardInterrupt:
        pass


def _exit_with_parent(parent: int) -> None:
    """An orphaned worker stops at once: its cell publishes nothing and is re-run by the next sweep."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
