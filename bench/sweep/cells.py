"""Run one cell of a sweep where a worker stands: claim it, run it, record how it ended, publish it.

The same function runs inline, in a worker process and in a Ray task. A cell whose
run raises, or records a failed measurement, is published with ``cell.status``
``failed``, its error in the sidecar and a ``failed`` row in its metrics; the next
sweep over the folder retries it. An interrupted cell (KeyboardInterrupt, a kill)
publishes nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .cell_folders import Busy, CellStore
from .grid import Cell, options_dict


@dataclass(frozen=True)
class Outcome:
    """How a cell ended: ``complete``, ``failed``, ``skipped`` (complete already) or ``busy`` (another process has it)."""

    cell_id: str
    status: str
    seconds: float = 0.0
    error: str = ""


def cell_device(cell: Cell, worker: int = 0) -> str:
    """The device a worker runs ``cell`` on: an explicit ``cuda:N`` as given, else one GPU per worker."""
    if cell.device == "cpu":
        return "cpu"
    if cell.options.device.startswith("cuda:"):
        return cell.options.device
    import torch

    count = torch.cuda.device_count()
    return f"cuda:{worker % count}" if count else "cuda"  # "cuda" without a GPU fails cleanly in resolve_device


def run_cell(cell: Cell, store: CellStore, device: str | None = None, progress_factory=None,
             console=None) -> Outcome:
    """Run ``cell`` unless it is complete or another process has it; publish it when it ends."""
    from ..run import execute, prepare

    start = time.perf_counter()
    try:
        with store.claim(cell.name) as work:
            if store.status(cell.name) == "complete":  # re-checked under the lock: another sweep may have run it
                return Outcome(cell.id, "skipped")
            options = replace(cell.options, device=device or cell.device, out=store.root)  # recorded in the sidecar
            status, error = "complete", ""
            try:
                plan = prepare(cell.task, [cell.estimator], options)
                result = execute(plan, progress_factory, console, run_dir=work, run_id=cell.name)
                failed = [r for r in result.rows if r["status"] == "failed"]
                if failed:
                    status, error = "failed", f"{failed[0]['metric']} at step {failed[0]['step']}: {failed[0]['message']}"
            except Exception as exc:
                if os.environ.get("GRADBENCH_DEBUG"):
                    raise
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                _add_failed_row(work, cell, error)
            _finish_sidecar(work, cell, status, error)
            store.commit(cell.name, work)
    except Busy:
        return Outcome(cell.id, "busy")
    return Outcome(cell.id, status, time.perf_counter() - start, error)


def record_failure(store: CellStore, cell: Cell, error: str) -> Outcome:
    """Publish ``cell`` as failed without running it (its worker died)."""
    try:
        with store.claim(cell.name) as work:
            _add_failed_row(work, cell, error)
            _finish_sidecar(work, cell, "failed", error)
            store.commit(cell.name, work)
    except Busy:
        return Outcome(cell.id, "busy")
    return Outcome(cell.id, "failed", 0.0, error)


def _finish_sidecar(work: Path, cell: Cell, status: str, error: str) -> None:
    from ..store import SIDECAR_FILE, read_sidecar, write_sidecar

    sidecar = read_sidecar(work) if (work / SIDECAR_FILE).exists() else {
        "run_id": cell.name, "status": "failed", "error": error, "options": options_dict(cell.options),
        "created_at": datetime.now(timezone.utc).isoformat()}
    sidecar["cell"] = {"id": cell.id, "status": status, "error": error, "task": cell.task,
                       "estimator": cell.estimator, "identity": cell.identity}
    write_sidecar(work, sidecar)


def _add_failed_row(work: Path, cell: Cell, error: str) -> None:
    """Append a ``failed`` row to whatever the cell recorded before it failed."""
    import pyarrow.parquet as pq

    from ..schema import estimator_columns, metric_row, run_columns
    from ..store import METRICS_FILE, write_metrics

    path = work / METRICS_FILE
    rows = pq.read_table(path).to_pylist() if path.exists() else []
    ident = cell.identity
    task, estimator = ident["task"], ident["estimator"]
    common = run_columns(run_id=cell.name, created_at=datetime.now(timezone.utc), torch_version=_torch_version(),
                         device=cell.device, dtype=ident["dtype"], seed=ident["seed"], task=task["name"],
                         task_version=task["version"], task_params=_json(task["params"]), engine=ident["engine"],
                         reference=ident["reference"])
    base = estimator_columns(common, estimator=estimator["name"], estimator_version=estimator["version"],
                             estimator_params=_json(estimator["params"]), estimator_label=cell.estimator_label,
                             family="", warmup=ident["warmup"])
    rows.append(metric_row(base, "failed", status="failed", message=error))
    write_metrics(work, rows)


def _json(params: dict) -> str:
    import json

    return json.dumps(params, sort_keys=True)  # as Task/Estimator.params_json write it


def _torch_version() -> str:
    import torch

    return torch.__version__

