"""Training tasks: train a model with an estimator and measure its gradients along the way.

A :class:`TrainingTask` implements ``train(estimator, session)``. The session is its
only link to the harness: it gives the device, dtype, seed and options, records
training curves (``log``), runs gradient measurements at frozen parameters against
a reference (``measure``), saves checkpoints, and rewrites the run's metrics file
atomically after every record, so an interrupted run keeps everything up to its
last completed step.
"""

from __future__ import annotations

import math
import sys
from abc import abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch

from .contract import Estimator, Problem, Task
from .noise import derive_seed
from .numbers import format_number
from .schema import base_row, measurement_rows, metric_row

TRAINING_METRIC_GROUP = ""  # param_group of training-curve rows ("train/neg_elbo", "test/accuracy", ...)


@dataclass
class TrainingSession:
    """What a training task may use. Created by the harness, one per (estimator, seed)."""

    estimator: Estimator
    device: torch.device
    dtype: torch.dtype
    seed: int
    samples: int
    reference: str
    reference_samples: int
    chunk_size: int
    run_dir: Path
    record: Callable[[list[dict[str, Any]]], None]
    common: dict[str, Any]
    progress: Any = None
    notes: list[str] = field(default_factory=list)
    warmup: int = 0
    engine: str = "vectorized"
    console: Any = None

    def note(self, message: str) -> None:
        """Tell the user something once per run (``notes`` is shared by the run's sessions)."""
        if message in self.notes:
            return
        self.notes.append(message)
        if self.console is not None:
            self.console.print(f"note: {message}", markup=False)
        else:
            print(f"note: {message}", file=sys.stderr)

    def generator(self, purpose: str) -> torch.Generator:
        """A seeded generator for one purpose ("init", "data", "train"), independent of the others."""
        g = torch.Generator(self.device)
        g.manual_seed(derive_seed(self.seed, purpose))
        return g

    @contextmanager
    def track(self, description: str, total: int) -> Iterator[Callable[[int], None] | None]:
        """A progress bar of ``total`` units while the block runs: yields ``advance(k)``, or None without a display."""
        progress = self.progress
        if progress is None or not hasattr(progress, "add_task") or total <= 0:
            yield None
            return
        task_id = progress.add_task(description, total=total)
        try:
            yield lambda k: progress.advance(task_id, k)
        finally:
            progress.remove_task(task_id)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Record training-curve values (e.g. {"train/neg_elbo": 112.3}) at ``step``; shown as the progress line."""
        base = base_row(self.common, self.estimator, "", 0)
        rows = [metric_row(base, name, float(value), step=step, param_group=TRAINING_METRIC_GROUP,
                           status="ok" if math.isfinite(value) else "failed",
                           message="" if math.isfinite(value) else "non-finite value")
                for name, value in values.items()]
        self.record(rows)
        shown = " · ".join(f"{name} {value:.4g}" for name, value in values.items() if not _is_timing(name))
        self.status(f"{self._who(step)}: {shown}", "curves")

    def status(self, message: str, kind: str = "") -> None:
        """A line of progress: under the bars on a terminal, printed as a line elsewhere (gradbench.progress)."""
        if hasattr(self.progress, "status"):
            self.progress.status(message, kind)
        elif self.console is not None:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def _who(self, step: int) -> str:
        return f"{self.estimator.label} seed {self.seed} step {step}"

    def measure(self, step: int, problem: Problem, state: Any = None, samples: int | None = None) -> Any:
        """Reference and gradient measurement at frozen parameters; rows recorded at ``step``."""
        from .references import resolve_reference
        from .engine import MeasureConfig, measure

        problem = problem.for_estimator(self.estimator)
        with self.track(f"step {step}: reference", self.reference_samples) as advance:
            reference = resolve_reference(problem, self.reference, self.reference_samples,
                                          derive_seed(self.seed, "reference", step), self.chunk_size, advance)
        samples = samples or self.samples
        config = MeasureConfig(samples, derive_seed(self.seed, "measure", step), self.chunk_size, self.engine)
        with self.track(f"step {step}: {self.estimator.label}", samples) as advance:
            result = measure(problem, self.estimator, reference.gradient, config, reference.variance, advance,
                             state=state)
        common = dict(self.common, reference=reference.kind, reference_samples=reference.samples)
        self.record(measurement_rows(common, result, step))
        self.status(f"{self._who(step)}: " + " · ".join(_gradient_line(g, s) for g, s in result.groups.items()),
                    "gradient")
        return result, reference

    def skip_measurement(self, step: int, groups: tuple[str, ...], reason: str) -> None:
        """Record that the gradient measurement at ``step`` was not made (status ``skipped``) and why."""
        base = base_row(self.common, self.estimator, "", 0)
        self.record([metric_row(base, "skipped", step=step, param_group=group, status="skipped", message=reason)
                     for group in groups])

    def checkpoint_path(self, step: int) -> Path:
        path = self.run_dir / "_checkpoints" / f"{self.estimator.label}-seed{self.seed}-step{step}.pt"
        path.parent.mkdir(exist_ok=True)
        return path


def _is_timing(name: str) -> bool:
    return name.rsplit("/", 1)[-1].endswith("seconds")


def _gradient_line(group: str, summary) -> str:
    """``encoder variance/element 1.2e-05, relative bias 0.031 (floor 0.004)``: a measurement at a glance."""
    if summary.status != "ok":
        return f"{group} {summary.status}"
    m = summary.metrics
    text = f"{group} variance/element {format_number(m['variance_per_element'].value)}"
    if "relative_bias" in m:
        text += f", relative bias {format_number(m['relative_bias'].value)}"
        if "bias_noise_floor" in m and "reference_norm" in m and m["reference_norm"].value > 0:
            text += f" (floor {format_number(m['bias_noise_floor'].value / m['reference_norm'].value)})"
    return text


class MovingVariance:
    """The DisARM / RODEO / Double-CV "gradient variance": moving averages over training steps.

    Each step's gradient g (a list of tensors, e.g. the encoder's parameter gradients) updates
    exponential moving averages m₁ ← d·m₁ + (1 − d)·g and m₂ ← d·m₂ + (1 − d)·g², both started
    at zero (as the authors' TensorFlow variables); ``value()`` is the mean over elements of
    m₂ − m₁². Because the parameters move between steps, it counts the drift of E g and of the
    variance along the way: it is the variance at no single point (docs/frontier.md).
    ``value(debiased=True)`` divides both averages by 1 − dⁿ first (Adam's correction), so a
    run of n ≪ 1/(1 − d) steps is not dominated by the zero start; with the papers' 10⁶ steps
    the two agree.
    """

    def __init__(self, decay: float = 0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"MovingVariance: decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self.first: list[torch.Tensor] = []
        self.second: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, grads: list[torch.Tensor]) -> None:
        """Add one step's gradient (tensors of fixed shapes, same order every step)."""
        if not self.first:
            self.first = [torch.zeros_like(g) for g in grads]
            self.second = [torch.zeros_like(g) for g in grads]
        for m1, m2, g in zip(self.first, self.second, grads):
            m1.mul_(self.decay).add_(g, alpha=1 - self.decay)
            m2.mul_(self.decay).addcmul_(g, g, value=1 - self.decay)
        self.steps += 1

    @torch.no_grad()
    def value(self, debiased: bool = False) -> float:
        """Mean over all elements of avg(g²) − avg(g)² (NaN before the first step)."""
        if not self.steps:
            return math.nan
        c = 1 - self.decay ** self.steps if debiased else 1.0
        total = sum(float((m2 / c - (m1 / c) ** 2).sum()) for m1, m2 in zip(self.first, self.second))
        return total / sum(m.numel() for m in self.first)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "steps": self.steps, "first": self.first, "second": self.second}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        self.first, self.second = list(state["first"]), list(state["second"])


class TrainingTask(Task):
    """A task trained with the estimator (``kind = "training"``)."""

    kind: ClassVar[str] = "training"

    @abstractmethod
    def train(self, estimator: Estimator, session: TrainingSession) -> None:
        """Train with ``estimator``; log curves and measure gradients through ``session``."""
