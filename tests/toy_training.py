"""A tiny training task for tests of reports: SGD on toy-quadratic's logits with an estimator.

It goes through the real :class:`gradbench.training.TrainingSession`, so its rows follow
the training conventions (curve rows with param_group "", gradient measurements at
``step``) without registering anything. Not a benchmark: a fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from gradbench import __version__, store
from gradbench.noise import NoiseSource
from gradbench.registry import estimators
from gradbench.training import TrainingSession, TrainingTask

# gradbench.tasks.toy is imported inside the methods: importing a registered module before the
# registry first loads its catalog changes what the registry reports (tests/test_registry.py).


@dataclass(frozen=True)
class ToyTraining(TrainingTask):
    """Minimise E f of toy-quadratic by SGD on the logits; log the exact loss, measure every few steps."""

    name = "toy-training"
    families = ("categorical",)
    exact = True
    groups = ("logits",)
    steps: int = 6
    lr: float = 2.0
    batch: int = 8
    measure_every: int = 2

    def _problem(self, logits):
        from gradbench.tasks.toy import DEFAULT_TARGET, QuadraticProblem

        target = torch.tensor(DEFAULT_TARGET, dtype=logits.dtype)
        return QuadraticProblem(logits, target, None)

    def train(self, estimator, session: TrainingSession) -> None:
        from gradbench.tasks.toy import DEFAULT_LOGITS

        logits = torch.tensor(DEFAULT_LOGITS, dtype=session.dtype).requires_grad_(True)
        outcomes = torch.eye(len(logits), dtype=session.dtype)
        noise = NoiseSource(session.seed, "train", session.device, session.dtype)
        for step in range(self.steps + 1):
            problem = self._problem(logits.detach())
            with torch.no_grad():
                probs = torch.softmax(logits, -1)
                values = problem.objective(outcomes)
                session.log(step, {"train/loss": float(probs @ values),
                                   "valid/accuracy": float(probs[values.argmin()])})
            if step % self.measure_every == 0:
                session.measure(step, problem)
            if step == self.steps:
                break
            dist = problem.distribution({"logits": logits.expand(self.batch, -1)})
            draws = noise.draw_all(estimator.noise(dist), step * self.batch, (step + 1) * self.batch)
            out = estimator.surrogate(dist, problem.objective, draws, None)
            (grad,) = torch.autograd.grad(out.value.mean(), logits)
            with torch.no_grad():
                logits -= self.lr * grad


def write_training_run(out: Path, estimator_specs: list[str], seed: int, samples: int = 400,
                       task: ToyTraining | None = None) -> Path:
    """Train with each estimator and write one run folder (metrics + sidecar) under ``out``."""
    task = task or ToyTraining()
    created = datetime.now(timezone.utc)
    run_id, run_dir = store.create_run_dir(out, created)
    common = {"run_id": run_id, "created_at": created, "gradbench_version": __version__,
              "torch_version": torch.__version__, "device": "cpu", "dtype": "float64", "seed": seed,
              "task": task.name, "task_version": task.version, "task_params": task.params_json(),
              "engine": "vectorized", "step": 0, "reference": "auto", "reference_samples": 0}
    rows: list[dict] = []
    for spec in estimator_specs:
        session = TrainingSession(estimator=estimators.build(spec), device=torch.device("cpu"),
                                  dtype=torch.float64, seed=seed, samples=samples, reference="exact",
                                  reference_samples=0, chunk_size=1 << 16, run_dir=run_dir, record=rows.extend,
                                  common=common)
        task.train(session.estimator, session)
    store.write_metrics(run_dir, rows)
    store.write_sidecar(run_dir, {"run_id": run_id, "status": "complete", "task": {"name": task.name}})
    return run_dir
