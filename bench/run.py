"""One ``gradbench run``: validate everything, measure each estimator, store the rows.

All checks (names, parameters, compatibility, options) happen in :func:`prepare`,
before anything is computed or written; :func:`execute` then does the work.
"""

from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .options import RunOptions
from .registry import compatibility, estimators, tasks
from .schema import base_row, measurement_rows, metric_row, run_columns
from .spec import Spec, parse_spec


@dataclass
class Plan:
    """A validated run: specs checked against declarations, compatibility known."""

    task_spec: Spec
    estimator_specs: list[Spec]
    families: list[str]
    options: RunOptions


def validate_specs(task: str, estimator_texts: list[str]) -> tuple[Spec, list[Spec], list[str]]:
    """Parse and check names, keys, types, ranges and compatibility, from declarations only."""
    if not estimator_texts:
        raise UserError("give at least one --estimator (see 'gradbench list estimators')")
    task_spec = tasks.validate(parse_spec(task))
    task_info = tasks.info(task_spec.name)
    specs, families = [], []
    for text in estimator_texts:
        spec = estimators.validate(parse_spec(text))
        info = estimators.info(spec.name)
        ok, detail = compatibility(info, task_info, spec.kwargs)
        if not ok:
            fits = [n for n in estimators.names() if compatibility(estimators.info(n), task_info)[0]]
            raise UserError(f"{spec.name} cannot run on {task_spec.name}: it {detail} "
                            f"(estimators that fit: {', '.join(fits) or 'none'})")
        specs.append(spec)
        families.append(detail)
    seen: dict[str, Spec] = {}
    for spec in specs:  # "stgs" and "stgs(tau=1.0)" are one configuration: defaults filled in before comparing
        key = resolved_key(spec)
        if key in seen:
            same = "is given twice" if str(seen[key]) == str(spec) else f"is the same configuration as {seen[key]}"
            raise UserError(f"estimator {spec} {same} (defaults filled in); give each configuration once")
        seen[key] = spec
    return task_spec, specs, families


def resolved_key(spec: Spec) -> str:
    """The spec with every declared default filled in, as canonical JSON (what is actually run)."""
    import json

    params = {name: p.default for name, p in estimators.info(spec.name).params.items()}
    return json.dumps([spec.name, {**params, **spec.kwargs}], sort_keys=True, default=str)


def prepare(task: str, estimator_texts: list[str], options: RunOptions) -> Plan:
    options.check()
    task_spec, specs, families = validate_specs(task, estimator_texts)
    return Plan(task_spec, specs, families, options)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    rows: list[dict[str, Any]]
    measurements: list = field(default_factory=list)
    reference: Any = None
    status: str = "running"  # the sidecar's final status: complete, or failed when a measurement failed
    error: str = ""  # the sidecar's error: which measurement failed first, and why
    kind: str = "fixed"  # the task's kind: fixed, or training


def build(plan: Plan):
    """Instantiate the task and estimators (imports torch; may raise cross-field SpecErrors)."""
    task = tasks.build(plan.task_spec)
    built = [estimators.build(s) for s in plan.estimator_specs]
    return task, built


def execute(plan: Plan, progress_factory: Callable | None = None, console=None,
            run_dir: Path | None = None, run_id: str | None = None) -> RunResult:
    """Measure (fixed tasks) or train and measure (training tasks) every estimator; write the run folder.

    The folder is ``options.out/<new run id>``, or ``run_dir`` (an existing, empty folder) named
    ``run_id`` when given: a sweep runs each cell in a temporary folder it renames on completion.
    """
    import torch

    from .environment import environment
    from .engine import resolve_device
    from .store import create_run_dir, write_metrics, write_sidecar

    task, built = build(plan)
    options = replace(plan.options, samples=plan.options.samples or task.default_samples,
                      reference_samples=plan.options.reference_samples or task.default_reference_samples)
    device = resolve_device(options.device)
    dtype_name = options.dtype or task.dtype
    dtype = getattr(torch, dtype_name)
    check_finite_params(task, dtype_name)

    progress = progress_factory() if progress_factory else nullcontext()
    with progress as bar:
        # Everything knowable before measuring is checked (and every reference computed) before the
        # run folder exists: an infeasible reference or an absurd size writes nothing.
        targets = preflight(task, built, options, device, dtype, bar) if task.kind == "fixed" else None
        created = datetime.now(timezone.utc)
        made_here = run_dir is None
        if made_here:
            run_id, run_dir = create_run_dir(Path(options.out), created)
        run_id = run_id or run_dir.name
        sidecar = {
            "run_id": run_id,
            "created_at": created.isoformat(),
            "status": "running",
            "task": {"name": task.name, "label": task.label, "version": task.version, "kind": task.kind,
                     "params": task.params_dict()},
            "estimators": [
                {"name": e.name, "label": e.label, "version": e.version, "params": e.params_dict(), "family": fam}
                for e, fam in zip(built, plan.families)
            ],
            "options": asdict(options),
            "dtype": dtype_name,
            "environment": environment(device),
        }
        try:
            write_sidecar(run_dir, sidecar)
        except BaseException:  # nothing written yet (full disk, no permission): leave no empty run folder
            if made_here:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        result = RunResult(run_id, run_dir, [], kind=task.kind)

        def record(rows: list[dict[str, Any]]) -> None:
            result.rows.extend(rows)
            write_metrics(run_dir, result.rows)  # rewritten atomically: an interrupted run keeps what it recorded

        common = run_columns(run_id=run_id, created_at=created, torch_version=torch.__version__,
                             device=str(device), dtype=dtype_name, seed=options.seed, task=task.name,
                             task_version=task.version, task_params=task.params_json(), engine=options.engine,
                             reference=options.reference)
        try:
            if task.kind == "fixed":
                _measure_fixed(targets, built, options, common, record, result, bar, console, sidecar)
            else:
                _train(task, built, options, device, dtype, common, record, result, bar, console, run_dir,
                       sidecar.setdefault("notes", []))
            failed = [r for r in result.rows if r["status"] == "failed"]
            sidecar["status"] = "failed" if failed else "complete"
            if failed:  # recorded, never averaged; the run's status and exit code say so
                sidecar["error"] = (f"{len({r['estimator_label'] for r in failed})} measurement(s) failed, first "
                                    f"{failed[0]['estimator_label']}: {failed[0]['message']}")
        except BaseException as exc:
            sidecar["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            sidecar["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            sidecar["finished_at"] = datetime.now(timezone.utc).isoformat()
            write_sidecar(run_dir, sidecar)
    result.status, result.error = sidecar["status"], sidecar.get("error", "")
    return result


MAX_TABLE_VALUES = 1 << 24  # values of one variable's sampling table or categorical view


def check_finite_params(task, dtype_name: str) -> None:
    """Every number the task was given must be finite in the run's dtype (1e39 is inf in float32)."""
    import torch

    largest = torch.finfo(getattr(torch, dtype_name)).max

    def numbers(value):
        if isinstance(value, (list, tuple)):
            for v in value:
                yield from numbers(v)
        elif isinstance(value, float):
            yield value

    for key, value in task.params_dict().items():
        for number in numbers(value):
            if not abs(number) <= largest:
                raise UserError(f"{task.name}: {key} holds {number!r}, which is not finite in {dtype_name} "
                                f"(|value| ≤ {largest:.3g}); give smaller values or --dtype float64")


def preflight(task, built, options, device, dtype, bar=None) -> list:
    """Build the problem, check each estimator's sizes against memory, and resolve every reference.

    Returns ``[(estimator, target problem, reference)]`` in estimator order, for :func:`_measure_fixed`.
    """
    import torch

    from .engine import noise_per_estimate
    from .view import View, replicate
    from .references import resolve_reference

    problem = task.problem(device, dtype)
    for group, value in problem.parameters().items():
        if not bool(torch.isfinite(value).all()):
            raise UserError(f"{task.name}: its {group} parameters are not finite in {str(dtype)[6:]} (the given "
                            "values overflow); give smaller values or --dtype float64")
    native = problem.distribution(replicate(problem.parameters(), 1))
    if (size := native.table_size()) > MAX_TABLE_VALUES:
        # Far out the size is a rough one (families/counts.py tail_level): say "over" rather than a false exact count.
        needs = f"{size:,}" if size < 4 * MAX_TABLE_VALUES else f"over {4 * MAX_TABLE_VALUES:,}"
        raise UserError(f"{getattr(task, 'label', task.name)}: one variable needs tables of {needs} values (at most "
                        f"{MAX_TABLE_VALUES:,}); give smaller counts or rates")
    references: dict[int, Any] = {}  # one per distinct problem (estimators of another objective get their own)
    targets = []
    for estimator in built:
        target = problem.for_estimator(estimator)
        noise_per_estimate(estimator, View(target, estimator).template)
        if id(target) not in references:
            references[id(target)] = resolve_reference(
                target, options.reference, options.reference_samples, options.seed, options.chunk_size,
                progress=_tracker(bar, "reference (REINFORCE-LOO)", options.reference_samples),
            )
        targets.append((estimator, target, references[id(target)]))
    return targets


def _measure_fixed(targets, built, options, common, record, result, bar, console, sidecar) -> None:
    from .engine import MeasureConfig, measure

    sidecar["reference"] = {}
    config = MeasureConfig(options.samples, options.seed, options.chunk_size, options.engine, options.warmup)
    for estimator, target, reference in targets:
        result.reference = result.reference or reference
        sidecar["reference"][estimator.label] = {"kind": reference.kind, "samples": reference.samples,
                                                 "stderr": {g: reference.stderr(g) for g in reference.gradient}}
        rows_common = dict(common, reference=reference.kind, reference_samples=reference.samples)
        advance = _tracker(bar, estimator.label, options.samples)
        try:
            measurement = measure(target, estimator, reference.gradient, config, reference.variance, advance)
        except Exception as exc:  # a broken (plugin) estimator must not sink the other measurements
            if os.environ.get("GRADBENCH_DEBUG"):
                raise
            measurement = _failed(estimator, target, f"{type(exc).__name__}: {exc}")
            _warn(console, estimator, exc)
        result.measurements.append(measurement)
        record(measurement_rows(rows_common, measurement))


def _train(task, built, options, device, dtype, common, record, result, bar, console, run_dir, notes) -> None:
    from .training import TrainingSession

    for estimator in built:
        session = TrainingSession(
            estimator=estimator, device=device, dtype=dtype, seed=options.seed, samples=options.samples,
            reference=options.reference, reference_samples=options.reference_samples,
            chunk_size=options.chunk_size, run_dir=run_dir, record=record, common=common, progress=bar,
            warmup=options.warmup, engine=options.engine, console=console, notes=notes,
        )
        try:
            task.train(estimator, session)
        except Exception as exc:
            if os.environ.get("GRADBENCH_DEBUG"):
                raise
            _warn(console, estimator, exc)
            record([metric_row(base_row(common, estimator, "", 0), "failed", status="failed",
                               message=f"{type(exc).__name__}: {exc}")])


def _warn(console, estimator, exc) -> None:
    if console is not None:
        console.print(f"[yellow]warning:[/] {estimator.label} failed: {type(exc).__name__}: {exc}", markup=True)


def _failed(estimator, problem, message: str):
    from .engine import Measurement
    from .stats import GroupSummary

    groups = {g: GroupSummary(0, p.numel(), {}, None, "failed", message) for g, p in problem.parameters().items()}
    return Measurement(estimator, "", groups, 0.0, 0)


def _tracker(bar, description: str, total: int):
    if bar is None or not hasattr(bar, "add_task"):
        return None
    task_id = bar.add_task(description, total=total)
    return lambda k: bar.advance(task_id, k)

