"""The Ray backend of ``gradbench sweep --backend ray``: each cell is one Ray task.

Ray is an optional extra (``pip install 'gradbench[ray]'``); only this module imports
it. ``--address`` joins an existing cluster (every node needs gradbench installed and
the results folder reachable: a shared filesystem or an object-store URI); without it
a local Ray instance is started for the sweep and stopped after it. A cell asks for
``threads`` CPUs, and for ``gpus_per_cell`` GPUs when it runs on CUDA; Ray makes the
GPU it grants the task's ``cuda`` device.
"""

from __future__ import annotations

from typing import Callable

from ..options import set_threads
from .cells import Outcome, record_failure, run_cell
from .cell_folders import CellStore
from ..errors import UserError
from .grid import Cell


class RayBackend:
    def __init__(self, address: str | None, jobs: int | None, threads: int, gpus_per_cell: float):
        try:
            import ray
        except ImportError:
            raise UserError("--backend ray needs Ray: pip install 'gradbench[ray]'") from None
        self.ray, self.threads, self.gpus_per_cell = ray, threads, gpus_per_cell
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     configure_logging=True)
        try:
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=jobs * threads if jobs else None, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}") from None

    def auto_device(self) -> str:
        return "cuda" if self.ray.cluster_resources().get("GPU", 0) > 0 else "cpu"

    def run(self, cells: list[Cell], store: CellStore, on_outcome: Callable[[Cell, Outcome], None]) -> None:
        ray = self.ray
        task = ray.remote(max_retries=1)(_ray_cell)
        refs = {}
        for cell in cells:
            gpus = self.gpus_per_cell if cell.device == "cuda" else 0
            refs[task.options(num_cpus=self.threads, num_gpus=gpus).remote(cell, store, self.threads)] = cell
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                cell = refs.pop(done[0])
                try:
                    outcome = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # the worker or its node died
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    outcome = record_failure(store, cell, f"Ray task failed: {first}")
                on_outcome(cell, outcome)
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref)  # running cells get a KeyboardInterrupt and publish nothing
            raise

    def close(self) -> None:
        self.ray.shutdown()  # disconnects from a cluster; stops a local instance this sweep started


def _ray_cell(cell: Cell, store: CellStore, threads: int) -> Outcome:
    set_threads(threads)
    device = cell.device if not cell.options.device.startswith("cuda:") else "cuda"  # Ray picks the GPU
    return run_cell(cell, store, device)
