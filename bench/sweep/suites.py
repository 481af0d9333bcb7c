"""Named suites of runs, read from TOML: ``gradbench run --suite NAME``.

A suite is a table with optional defaults and a list of runs; each run is one
``gradbench run`` and takes the same options (see ``suites.toml``)::

    [ci]
    description = "what it is for"
    samples = 4000            # defaults for every run of the suite
    device = "cpu"

    [[ci.runs]]
    task = "toy-quadratic"
    estimators = ["*", "gst(gap='p')"]   # "*": every registered estimator that fits the task

Values are resolved as run key > suite default > option given on the command line
overrides both. For ``gradbench run --suite`` every key holds one value. For
``gradbench sweep --suite`` a run is a grid (see :mod:`gradbench.sweep.grid`): ``task`` and
any option may hold a list, and ``estimator_grid`` / ``task_grid`` tables cross
parameter values into every estimator / task spec::

    [[gst-table.runs]]
    task = "mnist-vae"
    estimators = ["stgs", "gr-mc(k=100)", "gst(gap=1.0)", "gst(gap=1.2)"]
    estimator_grid = { tau = [1.0, 0.5] }
    seed = [0, 1, 2]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError, did_you_mean
from ..options import RunOptions
from .grid import Grid, expand_estimators  # noqa: F401  (expand_estimators: re-exported)

_OPTION_TYPES = {f.name: f.type for f in fields(RunOptions) if f.name != "out"}
_GRID_KEYS = ("estimator_grid", "task_grid")
_RUN_KEYS = ("task", "estimators", *_GRID_KEYS, *_OPTION_TYPES)
_SUITE_KEYS = ("description", "runs", *_GRID_KEYS, *_OPTION_TYPES)


@dataclass(frozen=True)
class SuiteRun:
    """One run of a suite: a task spec, estimator specs ("*" already expanded) and options."""

    task: str
    estimators: tuple[str, ...]
    options: RunOptions


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    runs: tuple[SuiteRun, ...]

    def with_options(self, **overrides: Any) -> Suite:
        """The same runs with some options replaced (those given on the command line)."""
        return replace(self, runs=tuple(replace(r, options=replace(r.options, **overrides)) for r in self.runs))


def builtin_suites_file() -> Path:
    return Path(str(resources.files(__package__).joinpath("suites.toml")))


def read_suites(path: Path | None = None) -> dict[str, dict]:
    """The raw suite tables of a TOML file (the packaged ``suites.toml`` by default)."""
    path = path or builtin_suites_file()
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no suites file at {path}; give an existing TOML file to --suite-file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"cannot read the suites file {path}: {exc}; fix its TOML syntax") from None
    return data


def _suite_table(name: str, path: Path | None) -> tuple[dict, list[dict]]:
    """The checked table of suite ``name`` and its run tables."""
    suites = read_suites(path)
    where = f"suites file {path}" if path else "the built-in suites"
    if name not in suites or not isinstance(suites[name], dict):
        names = sorted(k for k, v in suites.items() if isinstance(v, dict))
        raise UserError(f"no suite {name!r} in {where}{did_you_mean(name, names)} (suites: {', '.join(names) or 'none'})")
    table = suites[name]
    _check_keys(f"suite {name!r}", table, _SUITE_KEYS)
    runs = table.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"suite {name!r} has no runs; add [[{name}.runs]] tables with a task and estimators")
    for i, run in enumerate(runs):
        _check_keys(f"suite {name!r}, run {i + 1}", run, _RUN_KEYS)
    return table, runs


def load_suite(name: str, path: Path | None = None, out: str = "results") -> Suite:
    """Read, check and expand suite ``name``: unknown keys, bad types and bad specs are UserErrors."""
    table, runs = _suite_table(name, path)
    sweep = f"lists and grids make a sweep: gradbench sweep --suite {name}"
    for key in _GRID_KEYS:
        if key in table or any(key in run for run in runs):
            raise UserError(f"suite {name!r}: {key} crosses values into a grid; {sweep}")
    defaults = {k: v for k, v in table.items() if k in _OPTION_TYPES}
    built = tuple(_build_run(f"suite {name!r}, run {i + 1}", run, defaults, out, sweep) for i, run in enumerate(runs))
    return Suite(name, str(table.get("description", "")), built)


def load_grids(name: str, path: Path | None = None) -> tuple[str, list[Grid]]:
    """Suite ``name`` as grids for ``gradbench sweep`` (its description and one grid per run)."""
    table, runs = _suite_table(name, path)
    grids = []
    for i, run in enumerate(runs):
        where = f"suite {name!r}, run {i + 1}"
        values = {**{k: v for k, v in table.items() if k in _OPTION_TYPES}, **run}
        given_tasks = [values.get("task")] if isinstance(values.get("task"), str) else values.get("task")
        if not isinstance(given_tasks, list) or not given_tasks or not all(isinstance(t, str) for t in given_tasks):
            raise UserError(f"{where}: give the task as a spec string or a list of them, e.g. task = \"toy-quadratic\"")
        options = {}
        for key in _OPTION_TYPES:
            if key in values:
                listed = values[key] if isinstance(values[key], list) else [values[key]]
                for value in listed:
                    _check_value(where, key, value)
                options[key] = tuple(listed)
        crossed = {key: {**_grid_table(f"suite {name!r}", key, table.get(key, {})), **_grid_table(where, key, run.get(key, {}))}
                   for key in _GRID_KEYS}
        grids.append(Grid(tuple(given_tasks), tuple(_estimator_list(where, run)), crossed["task_grid"],
                          crossed["estimator_grid"], options, where))
    return str(table.get("description", "")), grids


def _grid_table(where: str, key: str, table: Any) -> dict[str, tuple]:
    if not isinstance(table, dict):
        raise UserError(f"{where}: {key} must be a table of parameter = [values], e.g. {key} = {{ tau = [1.0, 0.5] }}")
    return {k: tuple(v) if isinstance(v, list) else (v,) for k, v in table.items()}


def _estimator_list(where: str, run: dict) -> list[str]:
    given = run.get("estimators")
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or not given or not all(isinstance(e, str) for e in given):
        raise UserError(f"{where}: give estimators as a list of spec strings, e.g. estimators = [\"*\"]")
    return given


def _check_keys(where: str, table: dict, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)} (keys: {', '.join(allowed)})")


def _build_run(where: str, run: dict, defaults: dict, out: str, sweep: str) -> SuiteRun:
    if not isinstance(run.get("task"), str):
        if isinstance(run.get("task"), list):
            raise UserError(f"{where}: task is a list; a suite run takes one value per key ({sweep})")
        raise UserError(f"{where}: give the task as a spec string, e.g. task = \"toy-quadratic\"")
    given = _estimator_list(where, run)
    values = {**defaults, **{k: v for k, v in run.items() if k in _OPTION_TYPES}}
    for key, value in values.items():
        if isinstance(value, list):
            raise UserError(f"{where}: {key} is a list; a suite run takes one value per key ({sweep})")
        _check_value(where, key, value)
    return SuiteRun(run["task"], tuple(expand_estimators(run["task"], given)), RunOptions(out=out, **values))


def _check_value(where: str, key: str, value: Any) -> None:
    kind = _OPTION_TYPES[key].replace(" | None", "")  # None is never written in TOML
    ok = {"int": isinstance(value, int) and not isinstance(value, bool), "str": isinstance(value, str)}.get(kind, True)
    if not ok:
        raise UserError(f"{where}: {key} must be {'an integer' if kind == 'int' else 'a string'}, got {value!r}")
