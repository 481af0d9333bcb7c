"""Sweeps: grids of estimator × task × option cells run as resumable, atomic cell folders.

Modules: grid (cells of a grid and their resolved identity), suites (named suites and grids
from ``suites.toml``), driver (``gradbench sweep``: plan, run, resume), cells (one cell's
run), cell_folders (atomic cell folders with per-cell locks), workers (local worker
processes), ray_backend (the same cells on a Ray cluster).
"""

from .driver import SweepOptions, rerun_command, run_sweep

__all__ = ["SweepOptions", "rerun_command", "run_sweep"]
