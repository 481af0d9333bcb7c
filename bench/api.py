"""Measure estimators on your own objective or model, from Python, without writing a Task.

    import gradbench
    df = gradbench.measure_gradients(["reinforce", "rloo", "gst"], objective, logits=logits)

The estimators, the noise, the reference and the statistics are those of ``gradbench
run``: the same seed gives the same numbers, bit for bit, as a built-in task with the
same parameters and objective (see tests/test_api.py), and several estimators in one
call see the same draws wherever they ask for the same noise (common random numbers).

Two ways to give the distribution's parameters:
  logits: a tensor ``[*batch, K]`` (categorical) or ``[*batch]`` (bernoulli); the
      gradient is measured with respect to it (parameter group ``logits``).
  encoder + inputs: an ``nn.Module`` mapping ``inputs`` to such logits; the gradient is
      measured with respect to all of the encoder's parameters at their current (frozen)
      values (group ``encoder``, flattened in ``named_parameters`` order). Each estimate
      gets its own copy of the parameters through ``torch.func.functional_call`` under
      ``vmap``, so one backward pass gives every estimate of a chunk, as for mnist-vae.
The objective is a plain callable ``f(x [N, *batch(, K)]) -> [N]`` (one value per
sample), or ``-> [N, batch[0]]`` when it is a sum over the first batch axis (images of a
batch): score-function estimators then pair each image's value with its own
log-probability. A decoder inside f is fine; its parameters are not measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .contract import Estimator, Problem
from .errors import UserError
from .families.categorical import Bernoulli, Categorical, Objective

FAMILIES = ("categorical", "bernoulli")
TASK_NAME = "user-objective"  # the ``task`` column of rows measured through this API
_PARAM_VALUES = 1 << 24  # parameter values held at once by the encoder's per-estimate copies


@dataclass(frozen=True)
class UserTask:
    """What the rows and the sidecar say about a user's problem (a task-like record, no registry entry)."""

    name: str
    params: dict
    version: int = 1
    kind: str = "fixed"
    label: str = TASK_NAME
    default_samples: int = 10_000
    default_reference_samples: int = 100_000

    def params_dict(self) -> dict:
        return self.params

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True)


class UserProblem(Problem):
    """``E_{x~p}[f(x)]`` for a user's logits tensor, or a user's encoder and its input.

    logits: ``[*batch, K]`` (categorical) or ``[*batch]`` (bernoulli).
    encoder/inputs: ``encoder(inputs) -> logits`` of those shapes; parameter group ``encoder`` ``[P]``.
    units: 0 (f returns ``[N]``) or 1 (f returns ``[N, batch[0]]``, a sum over that axis).
    """

    def __init__(self, family: str, objective: Objective, units: int, logits: Tensor | None = None,
                 encoder: torch.nn.Module | None = None, inputs: Any = None, relaxed_f: bool = True,
                 differentiable_f: bool = True):
        self.family, self.objective, self.units = family, objective, units
        self.relaxed_f, self.differentiable_f = relaxed_f, differentiable_f  # what the user declares of f
        self.logits, self.encoder, self.inputs = logits, encoder, inputs
        if encoder is not None:
            named = dict(encoder.named_parameters())
            self.names = list(named)
            self.shapes = [p.shape for p in named.values()]
            self.flat = torch.cat([p.detach().reshape(-1) for p in named.values()])
            self.buffers = {k: b.detach() for k, b in encoder.named_buffers()}
            self.chunk_limit = max(1, _PARAM_VALUES // max(1, self.flat.numel()))

    def parameters(self) -> dict[str, Tensor]:
        if self.encoder is None:
            return {"logits": self.logits}
        return {"encoder": self.flat}

    def distribution(self, params: dict[str, Tensor]):
        logits = params["logits"] if self.encoder is None else self._encode(params["encoder"])
        return Categorical(logits, units=self.units) if self.family == "categorical" else Bernoulli(
            logits, units=self.units)

    def _encode(self, flat: Tensor) -> Tensor:
        """Parameter copies ``[n, P]`` -> logits ``[n, *batch(, K)]``, one encoder pass per copy (vmap)."""
        from torch.func import functional_call, vmap

        def one(vector: Tensor) -> Tensor:
            pieces = torch.split(vector, [math.prod(s) for s in self.shapes])
            params = {k: p.reshape(s) for k, p, s in zip(self.names, pieces, self.shapes)}
            return functional_call(self.encoder, {**params, **self.buffers}, (self.inputs,))

        return vmap(one)(flat)


def user_problem(objective: Callable, logits: Tensor | None = None, *, family: str = "categorical",
                 encoder: torch.nn.Module | None = None, inputs: Any = None, relaxed: bool = True,
                 differentiable: bool = True) -> UserProblem:
    """Check the user's pieces (one-line errors) and build the problem they describe."""
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    if not callable(objective):
        raise UserError(f"objective must be a callable f(x) -> [N] (one value per sample), got a "
                        f"{type(objective).__name__}")
    if (logits is None) == (encoder is None):
        raise UserError("give either logits (a tensor) or encoder (an nn.Module) with its inputs, not both or neither")
    if encoder is not None:
        if not isinstance(encoder, torch.nn.Module):
            raise UserError(f"encoder must be a torch.nn.Module, got a {type(encoder).__name__}")
        if inputs is None:
            raise UserError("encoder needs its inputs: pass inputs=... (what encoder(inputs) is called with)")
        if not any(p.numel() for p in encoder.parameters()):
            raise UserError("encoder has no parameters to measure the gradient of")
        with torch.no_grad():
            try:
                logits = encoder(inputs)
            except Exception as exc:
                raise UserError(f"encoder(inputs) failed: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
        where = "encoder(inputs)"
    else:
        where = "logits"
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise UserError(f"{where} must be a floating-point tensor, got {type(logits).__name__}"
                        + (f" of {logits.dtype}" if isinstance(logits, Tensor) else ""))
    if logits.dim() < 1 or (family == "categorical" and logits.shape[-1] < 2):
        shape = "[*batch, K] with K ≥ 2 categories" if family == "categorical" else "[*batch]"
        raise UserError(f"{where} has shape {tuple(logits.shape)}; a {family} needs {shape}")
    if not torch.isfinite(logits).all():
        raise UserError(f"{where} holds NaN or inf; give finite logits")
    problem = UserProblem(family, Objective(objective), 0, logits.detach() if encoder is None else None, encoder,
                          inputs, relaxed, differentiable)
    problem.units = _check_objective(problem, logits.detach())
    return problem


def _check_objective(problem: UserProblem, logits: Tensor) -> int:
    """Call f on two exact samples; return its units (0 or 1), or raise a one-line error."""
    dist = (Categorical if problem.family == "categorical" else Bernoulli)(logits.unsqueeze(0).expand(2, *logits.shape))
    generator = torch.Generator(logits.device).manual_seed(0)
    spec = dist.sample_noise()
    noise = torch.rand((2, *spec.shape), generator=generator, device=logits.device, dtype=logits.dtype)
    if spec.kind == "gumbel":
        noise = -torch.log(-torch.log(noise.clamp_min(torch.finfo(logits.dtype).tiny)))
    x = dist.sample(noise)
    try:
        with torch.no_grad():
            out = problem.objective.fn(x)
    except Exception as exc:
        raise UserError(f"objective failed on samples x of shape {tuple(x.shape)}: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())}") from None
    batch = tuple(x.shape[1:-1]) if problem.family == "categorical" else tuple(x.shape[1:])
    allowed = [(2,)] + ([(2, batch[0])] if batch else [])
    if not isinstance(out, Tensor) or tuple(out.shape) not in allowed:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"objective returned {got} for x of shape {tuple(x.shape)}; it must return one value per "
                        f"sample, shape [N] (or [N, {batch[0]}] for a sum over the first batch axis)" if batch else
                        f"objective returned {got} for x of shape {tuple(x.shape)}; it must return shape [N]")
    if not torch.isfinite(out).all():
        raise UserError(f"objective returned NaN or inf on samples x of shape {tuple(x.shape)}; "
                        "make f finite at every outcome")
    return out.dim() - 1


def _as_estimators(estimators: Any) -> list[Estimator]:
    from .registry import estimators as registry

    items = [estimators] if isinstance(estimators, (str, Estimator)) else list(estimators)
    if not items:
        raise UserError("give at least one estimator (a name, a spec such as 'gst(gap=1.2)', or an Estimator)")
    built = []
    for item in items:
        if isinstance(item, Estimator):
            built.append(item)
        elif isinstance(item, str):
            built.append(registry.build(item))
        else:
            raise UserError(f"an estimator is a name, a spec string or an Estimator instance, got {type(item).__name__}")
    labels = [e.label for e in built]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise UserError(f"estimator {twice[0]} is given twice; give each configuration once")
    return built


def _view_family(problem: UserProblem, estimator: Estimator) -> str:
    """The family the estimator will see, or a one-line error when it cannot run here."""
    if problem.family in estimator.families or "*" in estimator.families:
        family = problem.family
    elif "categorical" in estimator.families:
        family = "categorical"
    else:
        raise UserError(f"{estimator.name} handles {'/'.join(estimator.families)} variables, not {problem.family}")
    if estimator.capability("relaxed_f") and not problem.relaxed_f:
        raise UserError(f"{estimator.label} evaluates f at relaxed points, and this objective says relaxed=False")
    if estimator.capability("differentiable_f") and not problem.differentiable_f:
        raise UserError(f"{estimator.label} needs a differentiable f, and this objective says differentiable=False")
    if estimator.requires:
        raise UserError(f"{estimator.label} needs a task that offers {', '.join(estimator.requires)}, "
                        "which a plain objective does not")
    return family


def measure_gradients(estimators: str | Estimator | Sequence[str | Estimator], objective: Callable,
                      logits: Tensor | None = None, *, family: str = "categorical",
                      encoder: torch.nn.Module | None = None, inputs: Any = None, relaxed: bool = True,
                      differentiable: bool = True, samples: int = 10_000, seed: int = 0, reference: str = "auto",
                      reference_samples: int = 100_000, engine: str = "vectorized", chunk_size: int = 1 << 16,
                      warmup: int = 1000, out: str | None = None, name: str = TASK_NAME):
    """Bias, variance and the other metrics of each estimator on ``E_{x~p}[objective(x)]``.

    estimators: a name or spec ("gst(gap=1.2)"), an Estimator instance, or a list of them;
        they share noise (common random numbers) and one reference.
    objective: ``f(x [N, *batch(, K)]) -> [N]`` (or ``[N, batch[0]]``); ``relaxed`` and
        ``differentiable`` declare whether it accepts relaxed inputs and has df/dx
        (estimators that need what f lacks are refused).
    logits: ``[*batch, K]`` (family "categorical") or ``[*batch]`` ("bernoulli"); or
    encoder, inputs: an ``nn.Module`` with ``encoder(inputs)`` giving such logits.
    samples, seed, reference, reference_samples, engine, chunk_size, warmup: as ``gradbench run``;
        the reference is exact when the joint support has at most 2^20 configurations,
        else REINFORCE-LOO over ``reference_samples`` draws (its error bar widens every
        bias interval).
    out: a results folder; when given, the rows are also written there as a normal run
        folder (``out/<run id>/metrics.parquet`` and ``_run.json``).

    Returns a pandas DataFrame with one row per (estimator, parameter group, metric), in
    the schema of ``gradbench run``'s Parquet files (``task`` is ``name``). Raises
    :class:`gradbench.UserError` (one line) on bad input.
    """
    import pandas as pd

    from .options import RunOptions
    from .schema import COLUMNS

    options = RunOptions(samples=samples, seed=seed, out=out or "results", engine=engine,
                         device=str(_device_of(logits, encoder)), reference=reference,
                         reference_samples=reference_samples, chunk_size=chunk_size, warmup=warmup)
    options.check()
    problem = user_problem(objective, logits, family=family, encoder=encoder, inputs=inputs, relaxed=relaxed,
                           differentiable=differentiable)
    built = _as_estimators(estimators)
    families = [_view_family(problem, e) for e in built]
    shape = tuple(problem.distribution(_one(problem)).params.shape[1:])
    task = UserTask(name, {"family": family, "shape": list(shape), "units": problem.units,
                           "model": type(encoder).__name__ if encoder is not None else None})
    rows = measure_problem(problem, task, built, families, options, write=out is not None)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _one(problem: Problem) -> dict[str, Tensor]:
    return {k: p.detach().unsqueeze(0) for k, p in problem.parameters().items()}


def _device_of(logits: Tensor | None, encoder: torch.nn.Module | None) -> torch.device:
    if logits is not None and isinstance(logits, Tensor):
        return logits.device
    if encoder is not None and isinstance(encoder, torch.nn.Module):
        for p in encoder.parameters():
            return p.device
    return torch.device("cpu")


class _ProblemTask:
    """A fixed task that is just a ready problem: lets ``run`` measure it as it measures a built-in task."""

    kind = "fixed"

    def __init__(self, problem: Problem, record: UserTask):
        self._problem, self._record = problem, record

    def problem(self, device, dtype) -> Problem:
        return self._problem

    def __getattr__(self, name):
        return getattr(self._record, name)


def measure_fixed(problem: Problem, task: Any, built: list[Estimator], options, run_id: str,
                  record: Callable[[list[dict]], None], sidecar: dict, console=None, progress=None):
    """Measure ``built`` on ``problem`` exactly as ``gradbench run`` measures a fixed task.

    Goes through :func:`gradbench.run._measure_fixed` (one code path, hence the same bits);
    ``record(rows)`` receives the rows of each estimator as it finishes. Returns the RunResult.
    """
    import torch as _torch

    from .run import RunResult, _measure_fixed, preflight
    from .schema import run_columns

    params = next(iter(problem.parameters().values()))
    common = run_columns(run_id=run_id, created_at=_now(), torch_version=_torch.__version__, device=str(params.device),
                         dtype=str(params.dtype).removeprefix("torch."), seed=options.seed, task=task.name,
                         task_version=task.version, task_params=task.params_json(), engine=options.engine,
                         reference=options.reference)
    result = RunResult(run_id, None, [])
    targets = preflight(_ProblemTask(problem, task), built, options, params.device, params.dtype, progress)
    _measure_fixed(targets, built, options, common, record, result, progress, console, sidecar)
    return result


def measure_problem(problem: Problem, task: Any, built: list[Estimator], families: list[str], options,
                    write: bool = False) -> list[dict]:
    """The rows of :func:`measure_fixed`; with ``write``, also a run folder under ``options.out``."""
    from pathlib import Path

    from .store import create_run_dir, write_metrics, write_sidecar

    created = _now()
    rows: list[dict] = []
    run_dir, run_id = None, "api-" + created.strftime("%Y%m%dT%H%M%S")
    if write:
        run_id, run_dir = create_run_dir(Path(options.out), created)
    params = next(iter(problem.parameters().values()))
    sidecar = {"run_id": run_id, "created_at": created.isoformat(), "status": "running",
               "task": {"name": task.name, "label": task.label, "version": task.version, "kind": "fixed",
                        "params": task.params_dict()},
               "estimators": [{"name": e.name, "label": e.label, "version": e.version, "params": e.params_dict(),
                               "family": fam} for e, fam in zip(built, families)],
               "options": asdict(options), "dtype": str(params.dtype).removeprefix("torch."),
               "source": "gradbench.measure_gradients"}

    def record(new_rows):
        rows.extend(new_rows)
        if write:
            write_metrics(run_dir, rows)

    measure_fixed(problem, task, built, options, run_id, record, sidecar)
    if write:
        sidecar["status"] = "complete"
        write_sidecar(run_dir, sidecar)
    return rows


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
