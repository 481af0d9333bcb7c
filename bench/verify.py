"""``gradbench verify SPEC``: does an estimator do what it declares, and how does it compare?

The estimator is measured on every registered fixed task that has an exact gradient and
that it fits (one configuration per value of each of the task's string choices, such as
toy-bernoulli's quadratic and sine objectives), next to a few baselines with common
random numbers. Per task and parameter group:

  bias: ‖E ĝ − g‖ with its 95% interval, and a test of "unbiased": z = bias/floor, floor
      = √(variance/S) (the reference is exact), p = min(1, 2·(1 − Φ(z))) (valid whatever
      the covariance, by Székely–Bakirov, as in ``compare``), Holm-corrected over the
      estimator's tasks so that ``alpha`` bounds the chance of any false alarm. A bias
      below ROUNDING_FLOOR·ε·‖g‖ is rounding, never tested; identical estimates (zero
      variance) are biased when off by more than √ε relative.
  evaluations: f's evaluations per estimate, counted on a probe (gradbench.declarations)
      (points passed to f, or to log p(x, z) for an importance-weighted bound, over the
      estimates), against the declared number.
  relaxed points: whether f was evaluated anywhere but at discrete outcomes (the
      ``relaxed_f`` declaration).
  baselines: variance and work-normalised variance (variance × seconds per estimate)
      of the estimator over each baseline's, with approximate 95% intervals (delta
      method on the log ratio, each side's interval taken as independent).

A declaration is contradicted when the estimator declares itself unbiased and the test
rejects, when the counted evaluations differ from the declared ones, when f was
evaluated at relaxed points by an estimator declaring ``relaxed_f = False``, or when a
measurement fails on a task the estimator declares it fits.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .declarations import declared_evaluations, probe
from .registry import compatibility, estimators, tasks
from .spec import Spec, parse_spec

ROUNDING_FLOOR = 64  # multiples of ε·‖g‖, as reports.compare's rounding floor
POWER_Z = 0.8416212335729143  # Φ⁻¹(0.8): "detectable" means detected with 80% probability


@dataclass(frozen=True)
class Budget:
    """Estimates per measurement and warm-up steps of stateful estimators."""

    samples: int
    warmup: int
    description: str


BUDGETS = {
    "quick": Budget(4_000, 300, "≤ 2 minutes per estimator on 2 CPU cores"),
    "full": Budget(100_000, 1000, "about 25 times the quick budget's estimates"),
}


@dataclass(frozen=True)
class VerifyOptions:
    budget: str = "quick"
    alpha: float = 0.01
    seed: int = 0
    out: str = "results"
    against: tuple[str, ...] | None = None  # None: default_baselines(estimator)
    tasks: tuple[str, ...] | None = None  # None: every exact fixed task; else only these task names
    device: str = "auto"
    dtype: str | None = None

    def check(self) -> None:
        from .options import check_value

        if self.budget not in BUDGETS:
            raise UserError(f"unknown budget {self.budget!r}; choose one of {', '.join(BUDGETS)}")
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha must be between 0 and 1, got {self.alpha}")
        for name in ("seed", "device", "dtype"):  # validated as the run options they become
            check_value(name, getattr(self, name))


# -- the estimator under test ---------------------------------------------------------------------

_FILE_SPEC = re.compile(r"^(?P<path>.+\.py):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)(?P<args>\(.*\))?$", re.S)


def resolve_estimator(text: str) -> Spec:
    """A registered or plugin spec, or ``path/to/file.py:ClassName[(k=v, ...)]`` (imported, registered in-process)."""
    match = _FILE_SPEC.match(text.strip())
    if match is None:
        return estimators.validate(parse_spec(text))
    cls = load_estimator_file(Path(match["path"]), match["cls"])
    return estimators.validate(parse_spec(cls.name + (match["args"] or "")))


def load_estimator_file(path: Path, class_name: str) -> type:
    """Import ``path`` as a module (no install) and register its ``class_name`` estimator in-process."""
    from .contract import Estimator

    if not path.is_file():
        raise UserError(f"no file {path}: give path/to/file.py:ClassName")
    module_name = f"gradbench_verify_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UserError(f"importing {path} failed: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        from .errors import did_you_mean

        classes = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Estimator)]
        raise UserError(f"{path} has no class {class_name!r}{did_you_mean(class_name, classes)}")
    if not (isinstance(cls, type) and issubclass(cls, Estimator)) or inspect.isabstract(cls):
        raise UserError(f"{path}:{class_name} is not a concrete gradbench Estimator subclass")
    from .capabilities import FromParam

    if not isinstance(getattr(cls, "name", None), str) or not isinstance(getattr(cls, "unbiased", None),
                                                                         (bool, FromParam)):
        raise UserError(f"{path}:{class_name} must declare a string 'name' and 'unbiased' (True, False or "
                        "FromParam('a boolean parameter'))")
    estimators.register(cls)
    return cls


def default_baselines(estimator) -> list[str]:
    """REINFORCE, RLOO at the estimator's evaluations (m ≥ 2), and STGS, GST for an estimator using df/dx."""
    try:
        evaluations = int(estimator.n_evaluations())
    except (TypeError, ValueError):  # evaluations that depend on the task (K·D + 1)
        evaluations = 2
    out = ["reinforce", f"rloo(m={max(2, evaluations)})"]
    if estimator.capability("differentiable_f"):
        out += ["stgs", "gst"]
    return out


# -- tasks ----------------------------------------------------------------------------------------

def exact_task_specs() -> list[Spec]:
    """Fixed tasks with an exact gradient: the default configuration, plus one per other string choice."""
    out = []
    for name in tasks.names():
        info = tasks.info(name)
        if info.capabilities.get("kind") != "fixed" or not info.capabilities.get("exact"):
            continue
        out.append(Spec(name))
        for key, p in info.params.items():
            if p.kind == "str" and p.choices:
                out += [Spec(name, {key: c}) for c in p.choices if c != p.default]
    return out


# -- results -------------------------------------------------------------------------------------------

@dataclass
class Ratio:
    value: float
    low: float
    high: float


@dataclass
class TaskCheck:
    """What verify found for the estimator on one task configuration and parameter group."""

    task: str
    group: str
    reference: str
    status: str = "ok"
    message: str = ""
    bias: Any = None  # stats.Metric
    relative_bias: Any = None
    floor: float = math.nan
    reference_norm: float = math.nan
    z: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    tested: bool = False
    at_rounding: bool = False
    bias_detected: bool = False
    detectable: float = math.nan  # smallest relative bias detected with 80% probability
    eps: float = 2.0**-52  # machine epsilon of the task's dtype
    evaluations_declared: int | None = None
    evaluations_counted: float = math.nan
    relaxed_points: bool = False
    ratios: dict[str, tuple[Ratio, Ratio]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    label: str
    declared: dict
    budget: str
    samples: int
    alpha: float
    seed: int
    baselines: list[str]
    checks: list[TaskCheck]
    run_dir: Path | None
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [p for c in self.checks for p in c.problems]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    @property
    def holds(self) -> bool:
        return not self.problems


def _ratio(a, b) -> Ratio:
    """a/b with an approximate 95% interval from the two metrics' intervals (log scale, independent)."""
    if not (a.value > 0 and b.value > 0):
        return Ratio(math.nan, math.nan, math.nan)
    ra = max(a.ci_high - a.value, a.value - a.ci_low) / a.value if math.isfinite(a.ci_low) else math.nan
    rb = max(b.ci_high - b.value, b.value - b.ci_low) / b.value if math.isfinite(b.ci_low) else math.nan
    value = a.value / b.value
    half = math.hypot(ra, rb)
    if not math.isfinite(half):
        return Ratio(value, math.nan, math.nan)
    return Ratio(value, value * math.exp(-half), value * math.exp(half))


def _holm(ps: list[float]) -> list[float]:
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [1.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


# -- the command -----------------------------------------------------------------------------------------

def plan(text: str, options: VerifyOptions) -> tuple[Spec, list[Spec], list[tuple[Spec, list[Spec]]], list[str]]:
    """Validate everything before measuring: (estimator, baselines, [(task, fitting baselines)], skipped tasks)."""
    options.check()
    spec = resolve_estimator(text)
    info = estimators.info(spec.name)
    against = list(options.against) if options.against is not None else default_baselines(estimators.build(spec))
    baselines, seen = [], {_configuration(spec)}
    for b in against:
        bspec = estimators.validate(parse_spec(b))
        if _configuration(bspec) not in seen:  # the estimator itself, or a baseline given twice
            seen.add(_configuration(bspec))
            baselines.append(bspec)
    chosen, skipped = [], []
    available = exact_task_specs()
    for name in options.tasks or ():
        if name not in {t.name for t in available}:
            from .errors import did_you_mean

            names = sorted({t.name for t in available})
            raise UserError(f"--task {name!r} is not a fixed task with an exact gradient"
                            f"{did_you_mean(name, names)} (choose from {', '.join(names)})")
    for tspec in available:
        if options.tasks and tspec.name not in options.tasks:
            continue
        tinfo = tasks.info(tspec.name)
        ok, why = compatibility(info, tinfo, spec.kwargs)
        if not ok:
            skipped.append(f"{tspec}: {why}")
            continue
        fits = [b for b in baselines if compatibility(estimators.info(b.name), tinfo, b.kwargs)[0]]
        chosen.append((tspec, fits))
    if not chosen:
        raise UserError(f"{spec} fits no fixed task with an exact gradient ({'; '.join(skipped) or 'none registered'}); "
                        "nothing to verify")
    return spec, baselines, chosen, skipped


def _configuration(spec: Spec) -> tuple:
    """A spec with its defaults filled in: rloo and rloo(m=4) are one configuration."""
    params = estimators.info(spec.name).params
    return spec.name, tuple(sorted((k, repr(spec.kwargs.get(k, p.default))) for k, p in params.items()))


def verify(text: str, options: VerifyOptions = VerifyOptions(), console=None, progress=None) -> Verdict:
    """Measure, judge and store; returns the verdict (``exit_code`` 0 when every declaration holds)."""
    import torch

    from . import __version__
    from .api import measure_fixed
    from .engine import resolve_device
    from .environment import environment
    from .options import RunOptions
    from .store import create_run_dir, write_metrics, write_sidecar

    started = time.perf_counter()
    spec, baselines, chosen, skipped = plan(text, options)
    budget = BUDGETS[options.budget]
    device = resolve_device(options.device)
    estimator = estimators.build(spec)
    declared = {k: estimator.capability(k) for k in estimator._capability_fields}
    declared = {k: v if isinstance(v, (bool, int, float, list, tuple, type(None))) else str(v)
                for k, v in declared.items()}  # typed capabilities (K·D + 1) as their text
    run_options = RunOptions(samples=budget.samples, seed=options.seed, out=options.out, device=str(device),
                             dtype=options.dtype, reference="exact", warmup=budget.warmup)
    run_id, run_dir = create_run_dir(Path(options.out))
    sidecar = {"run_id": run_id, "status": "running", "command": "verify", "estimator": str(spec),
               "declared": declared, "baselines": [str(b) for b in baselines], "budget": options.budget,
               "alpha": options.alpha, "options": asdict(run_options), "environment": environment(device),
               "tasks": {}, "skipped": skipped}
    write_sidecar(run_dir, sidecar)
    rows: list[dict] = []

    def record(new_rows):
        rows.extend(new_rows)
        write_metrics(run_dir, rows)

    checks: list[TaskCheck] = []
    try:
        for number, (tspec, fits) in enumerate(chosen, 1):
            if console is not None and console.is_terminal:
                console.print(f"[{number}/{len(chosen)}] {tspec}: {estimator.label} and "
                              f"{', '.join(map(str, fits)) or 'no baselines'}", markup=False, highlight=False)
            task = tasks.build(tspec)
            dtype = getattr(torch, options.dtype or task.dtype)
            problem = task.problem(device, dtype)
            built = [estimator] + [estimators.build(b) for b in fits]
            task_sidecar: dict = {}
            start = len(rows)
            result = measure_fixed(problem, task, built, run_options, run_id, record, task_sidecar, console, progress)
            sidecar["tasks"][str(tspec)] = task_sidecar
            new = task_checks(str(tspec), problem, estimator, result, options.seed)
            checks += new
            record(_check_rows(rows[start:], estimator.label, new))
        _judge(checks, declared, options.alpha)
        sidecar["status"] = "complete"
    except BaseException as exc:
        sidecar["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        sidecar["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_sidecar(run_dir, sidecar)
    verdict = Verdict(str(spec), declared, options.budget, budget.samples, options.alpha, options.seed,
                      [str(b) for b in baselines], checks, run_dir, time.perf_counter() - started, skipped)
    sidecar["verdict"] = {"holds": verdict.holds, "problems": verdict.problems, "seconds": verdict.seconds}
    write_sidecar(run_dir, sidecar)
    from .verify_card import write_card

    write_card(verdict, run_dir, {"gradbench": __version__, "torch": torch.__version__, "run_id": run_id})
    return verdict


def task_checks(task: str, problem, estimator, result, seed: int) -> list[TaskCheck]:
    """The estimator's figures on one task (one check per parameter group), from the run's measurements.

    result: the RunResult of the estimator (first) and its baselines on ``problem``.
    """
    import torch
    from scipy import stats as sps

    from .view import View

    target = problem.for_estimator(estimator)
    try:
        counted, relaxed = probe(target, estimator, seed)
    except Exception:  # a broken estimator: its measurement failed too, and says why
        counted, relaxed = math.nan, False
    declared = declared_evaluations(estimator, View(target, estimator).template)
    mine, others = result.measurements[0], result.measurements[1:]
    eps = torch.finfo(next(iter(target.parameters().values())).dtype).eps
    checks = []
    for group, summary in mine.groups.items():
        check = TaskCheck(task, group, result.reference.kind, evaluations_declared=declared,
                          evaluations_counted=counted, relaxed_points=relaxed, eps=eps)
        checks.append(check)
        if summary.status != "ok":
            check.status, check.message = "failed", summary.message
            check.problems.append(f"{task} [{group}]: the measurement failed: {summary.message}")
            continue
        m = summary.metrics
        check.bias, check.relative_bias = m["bias_norm"], m["relative_bias"]
        check.floor, check.reference_norm = m["bias_noise_floor"].value, m["reference_norm"].value
        check.z = check.bias.value / check.floor if check.floor > 0 else math.inf
        check.at_rounding = check.bias.value <= ROUNDING_FLOOR * eps * check.reference_norm
        check.tested = not check.at_rounding and check.reference_norm > 0
        if check.floor > 0:
            check.p = min(1.0, 2 * float(sps.norm.sf(check.z))) if check.tested else 1.0
        else:  # every estimate identical: no noise, so any bias beyond √ε (relative) is real
            check.p = 0.0 if check.tested and check.relative_bias.value > math.sqrt(eps) else 1.0
        for other in others:
            o = other.groups.get(group)
            if o is None or o.status != "ok" or problem.for_estimator(other.estimator) is not target:
                continue  # a baseline of another objective (VIMCO's bound) has nothing to compare
            check.ratios[other.estimator.label] = (
                _ratio(m["variance"], o.metrics["variance"]),
                _ratio(m["work_normalized_variance"], o.metrics["work_normalized_variance"]))
    return checks


_METRIC_COLUMNS = ("param_group", "n_estimates", "metric", "value", "ci_low", "ci_high", "status", "message")


def _check_rows(rows: list[dict], label: str, checks: list[TaskCheck]) -> list[dict]:
    """Counted and declared evaluations as extra metric rows (no interval) next to the estimator's own rows."""
    from .schema import metric_row

    out = []
    for check in checks:
        head = next((r for r in rows if r["estimator_label"] == label and r["param_group"] == check.group), None)
        if head is None:
            continue
        base = {k: v for k, v in head.items() if k not in _METRIC_COLUMNS}
        for metric, value in (("evaluations_counted", check.evaluations_counted),
                              ("evaluations_declared", check.evaluations_declared),
                              ("relaxed_points", float(check.relaxed_points))):
            out.append(metric_row(base, metric, math.nan if value is None else float(value), param_group=check.group,
                                  n_estimates=head["n_estimates"]))
    return out


def _judge(checks: list[TaskCheck], declared: dict, alpha: float) -> None:
    """Holm over the tested tasks; turn contradicted declarations into named problems."""
    from scipy import stats as sps

    tested = [c for c in checks if c.tested]
    for c, adj in zip(tested, _holm([c.p for c in tested])):
        c.p_holm = adj
    z_crit = float(sps.norm.isf(alpha / (2 * max(1, len(tested)))))
    for c in checks:
        if c.status != "ok":
            continue
        if c.reference_norm > 0:
            c.detectable = ((z_crit + POWER_Z) * c.floor / c.reference_norm if c.floor > 0
                            else math.sqrt(c.eps))
        c.bias_detected = c.tested and c.p_holm < alpha
        if declared.get("unbiased") is True and c.bias_detected:
            c.problems.append(f"{c.task} [{c.group}]: declared unbiased, but the bias is {c.bias.value:.3g} "
                              f"(relative {c.relative_bias.value:.3g}, {c.z:.1f} standard errors, Holm p = "
                              f"{c.p_holm:.2g} < {alpha})")
        if c.evaluations_declared is not None and math.isfinite(c.evaluations_counted) and not math.isclose(
                c.evaluations_counted, c.evaluations_declared):
            c.problems.append(f"{c.task} [{c.group}]: declares {c.evaluations_declared} evaluations of f per "
                              f"estimate, counted {c.evaluations_counted:g}")
        if c.relaxed_points and declared.get("relaxed_f") is False:
            c.problems.append(f"{c.task} [{c.group}]: declares relaxed_f = False, but evaluated f at "
                              "non-discrete points")
