"""Grids for ``gradbench sweep``: the cartesian product of tasks, estimators, crossed
parameters and option values, expanded into cells with a stable identity.

A **cell** is one estimator on one task with one seed and one set of options: the unit
a sweep runs, stores as one run folder and skips once it is complete. Its identity is a
hash of its fully *resolved* configuration: task and estimator names, versions and all
their parameters with defaults filled in (after the task's own resolution, e.g. a
preset), and every option that changes numbers (seed, samples, reference and its
draws, engine, dtype, device kind, warm-up, chunk size). The same configuration
written two ways (``gst`` and ``gst(gap=1.0)``) is one cell; a new task or estimator
``version`` makes new cells.

Crossing a parameter into specs is explicit: ``estimator_grid = {tau = [1.0, 0.5]}``
sets ``tau`` in every estimator spec of the grid, and fails before anything runs when
an estimator has no such parameter or its spec already sets it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError, did_you_mean
from ..registry import compatibility, estimators, tasks
from ..options import OPTION_NAMES, RunOptions
from ..run import validate_specs
from ..spec import Spec, parse_spec

ALL_ESTIMATORS = "*"  # in a grid or suite: every registered estimator that fits the task
ID_LENGTH = 12  # hex digits of the cell id: 48 bits, collisions negligible below millions of cells


@dataclass(frozen=True)
class Grid:
    """One block of a sweep: every combination of its values is a cell.

    ``options`` maps a :class:`RunOptions` field to its values (one value: a 1-tuple);
    ``task_grid`` and ``estimator_grid`` map a parameter to values crossed into every
    task or estimator spec.
    """

    tasks: tuple[str, ...]
    estimators: tuple[str, ...]
    task_grid: dict[str, tuple] = field(default_factory=dict)
    estimator_grid: dict[str, tuple] = field(default_factory=dict)
    options: dict[str, tuple] = field(default_factory=dict)
    where: str = "the command line"


@dataclass(frozen=True, eq=False)
class Cell:
    """One configuration to run: validated specs, options, and the identity they resolve to."""

    task: str  # spec text, crossed values included
    estimator: str
    options: RunOptions
    device: str  # "cpu" or "cuda": the device kind it runs on (part of its identity)
    identity: dict[str, Any]  # the resolved configuration the id hashes
    id: str
    estimator_label: str = ""  # how results name the estimator (gst(gap=1.2)), not part of the identity

    @property
    def name(self) -> str:
        """Its folder (and run id): readable prefix, identity suffix."""
        return f"{self.identity['task']['name']}-{self.identity['estimator']['name']}-seed{self.options.seed}-{self.id}"

    @property
    def label(self) -> str:
        return f"{self.task} · {self.estimator} · seed {self.options.seed}"


def cell_id(identity: dict[str, Any]) -> str:
    """Hash of the canonical JSON of a resolved configuration."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def cross(text: str, grid: dict[str, tuple], kind: str, where: str) -> list[str]:
    """``text`` with every combination of ``grid`` set in it, as validated spec strings."""
    registry = estimators if kind == "estimator" else tasks
    spec = registry.validate(parse_spec(text))
    declared = registry.info(spec.name).params
    for key in grid:
        if key not in declared:
            raise UserError(f"{where}: {kind} {spec.name} has no parameter {key!r} to cross{did_you_mean(key, declared)} "
                            f"(parameters: {', '.join(declared) or 'none'}); put {kind}s without it in another run")
        if key in spec.kwargs:
            raise UserError(f"{where}: {text} already sets {key}, which {kind}_grid also crosses; drop it from one")
    out = []
    for combo in itertools.product(*grid.values()):
        out.append(str(registry.validate(Spec(spec.name, {**spec.kwargs, **dict(zip(grid, combo))}))))
    return out


MAX_CELLS = 100_000  # cells a sweep may plan: each is a folder and at least seconds of compute


def check_size(grid: Grid) -> None:
    """Refuse a grid with more than MAX_CELLS cells before listing them (planning holds every cell)."""
    counts = [len(grid.tasks), len(grid.estimators), *map(len, grid.options.values()),
              *map(len, grid.task_grid.values()), *map(len, grid.estimator_grid.values())]
    cells = math.prod(counts)
    if cells > MAX_CELLS:
        raise UserError(f"{grid.where}: the grid has {cells:,} cells (at most {MAX_CELLS:,}); give fewer seeds or "
                        "values, or split it into several sweeps into the same --out")


def expand(grid: Grid) -> list[tuple[str, str, RunOptions]]:
    """Validated (task spec, estimator spec, options) of every cell of ``grid``, seeds outermost.

    Checks names, keys, types, ranges, compatibility and options from declarations
    only (nothing is built or imported).
    """
    for key in grid.options:
        if key not in OPTION_NAMES:
            raise UserError(f"{grid.where}: unknown option {key!r}{did_you_mean(key, OPTION_NAMES)}")
    for name, values in (("tasks", grid.tasks), ("estimators", grid.estimators), *grid.options.items(),
                         *grid.task_grid.items(), *grid.estimator_grid.items()):
        if not values:
            raise UserError(f"{grid.where}: {name} has no values; give at least one")
    check_size(grid)
    keys = sorted(grid.options, key=lambda k: (k != "seed", k))  # seeds outermost: early results cover every estimator
    option_sets = []
    for combo in itertools.product(*(grid.options[k] for k in keys)):
        options = RunOptions(**dict(zip(keys, combo)))
        options.check()
        option_sets.append(options)
    specs = []
    for text in grid.tasks:
        for task in cross(text, grid.task_grid, "task", grid.where):
            crossed = [e for given in expand_estimators(task, list(grid.estimators))
                       for e in cross(given, grid.estimator_grid, "estimator", grid.where)]
            for estimator in crossed:
                validate_specs(task, [estimator])  # compatibility, with the crossed values
            specs += [(task, estimator) for estimator in crossed]
    return [(task, estimator, options) for options in option_sets for task, estimator in specs]


def device_kind(device: str, auto: str) -> str:
    """``cpu`` or ``cuda`` for a --device value; ``auto`` becomes what the backend offers."""
    if device == "auto":
        return auto
    return "cuda" if device.startswith("cuda") else "cpu"


def resolve(triples: list[tuple[str, str, RunOptions]], auto_device: str) -> tuple[list[Cell], int]:
    """Build each task and estimator to resolve every parameter; return the distinct cells and
    how many duplicates (same identity) were dropped. Imports torch."""
    built_tasks: dict[str, Any] = {}
    built_estimators: dict[str, Any] = {}
    cells: dict[str, Cell] = {}
    duplicates = 0
    for task_text, estimator_text, options in triples:
        if task_text not in built_tasks:
            built_tasks[task_text] = tasks.build(task_text)
        if estimator_text not in built_estimators:
            built_estimators[estimator_text] = estimators.build(estimator_text)
        task, estimator = built_tasks[task_text], built_estimators[estimator_text]
        kind = device_kind(options.device, auto_device)
        identity = {
            "task": {"name": task.name, "version": task.version, "params": task.params_dict()},
            "estimator": {"name": estimator.name, "version": estimator.version, "params": estimator.params_dict()},
            "seed": options.seed,
            "samples": options.samples or task.default_samples,
            "reference": options.reference,
            "reference_samples": options.reference_samples or task.default_reference_samples,
            "engine": options.engine,
            "dtype": options.dtype or task.dtype,
            "device": kind,
            "warmup": options.warmup,
            "chunk_size": options.chunk_size,
        }
        cell = Cell(task_text, estimator_text, options, kind, identity, cell_id(identity), estimator.label)
        if cell.id in cells:
            duplicates += 1
        else:
            cells[cell.id] = cell
    return list(cells.values()), duplicates


def options_dict(options: RunOptions) -> dict[str, Any]:
    return {k: v for k, v in asdict(options).items() if k != "out"}


def expand_estimators(task: str, given: list[str]) -> list[str]:
    """Replace "*" by every registered estimator that fits ``task`` (default configuration)."""
    if ALL_ESTIMATORS not in given:
        return list(given)
    task_info = tasks.info(tasks.validate(parse_spec(task)).name)
    explicit = [e for e in given if e != ALL_ESTIMATORS]
    named = {parse_spec(e).name for e in explicit if "(" not in e}
    fitting = [n for n in estimators.names()
               if n not in named and compatibility(estimators.info(n), task_info)[0]]
    position = given.index(ALL_ESTIMATORS)
    return explicit[:position] + fitting + explicit[position:]
