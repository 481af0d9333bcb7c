"""One ``gradbench run``: validate everything, measure each estimator, store the rows.

All checks (names, parameters, compatibility, options) happen in :func:`prepare`,
before anything is computed or written; :func:`execute` then does the work.
"""

from __future__ import annotations

import os
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
    labels = [str(s) for s in specs]
    duplicates = {x for x in labels if labels.count(x) > 1}
    if duplicates:
        raise UserError(f"estimator {sorted(duplicates)[0]} is given twice; give each configuration once")
    return task_spec, specs, families


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

    created = datetime.now(timezone.utc)
    if run_dir is None:
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
    write_sidecar(run_dir, sidecar)
    result = RunResult(run_id, run_dir, [])

    def record(rows: list[dict[str, Any]]) -> None:
        result.rows.extend(rows)
        write_metrics(run_dir, result.rows)  # rewritten atomically: an interrupted run keeps what it recorded

    common = run_columns(run_id=run_id, created_at=created, torch_version=torch.__version__, device=str(device),
                         dtype=dtype_name, seed=options.seed, task=task.name, task_version=task.version,
                         task_params=task.params_json(), engine=options.engine, reference=options.reference)
    progress = progress_factory() if progress_factory else nullcontext()
    try:
        with progress as bar:
            if task.kind == "fixed":
                _measure_fixed(task, built, options, device, dtype, common, record, result, bar, console, sidecar)
            else:
                _train(task, built, options, device, dtype, common, record, result, bar, console, run_dir,
                       sidecar.setdefault("notes", []))
        sidecar["status"] = "complete"
    except BaseException as exc:
        sidecar["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        sidecar["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        sidecar["finished_at"] = datetime.now(timezone.utc).isoformat()
        write_sidecar(run_dir, sidecar)
    return result


def _measure_fixed(task, built, options, device, dtype, common, record, result, bar, console, sidecar) -> None:
    from .references import resolve_reference
    from .engine import MeasureConfig, measure

    problem = task.problem(device, dtype)
    references: dict[int, Any] = {}  # one per distinct problem (estimators of another objective get their own)
    sidecar["reference"] = {}
    config = MeasureConfig(options.samples, options.seed, options.chunk_size, options.engine, options.warmup)
    for estimator in built:
        target = problem.for_estimator(estimator)
        if id(target) not in references:
            references[id(target)] = resolve_reference(
                target, options.reference, options.reference_samples, options.seed, options.chunk_size,
                progress=_tracker(bar, "reference (REINFORCE-LOO)", options.reference_samples),
            )
        reference = references[id(target)]
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

