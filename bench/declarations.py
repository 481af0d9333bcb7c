"""Probing what an estimator does against what it declares: evaluations of f, relaxed points.

The objective is wrapped by a counter and the estimator draws PROBE estimates through
the engine's own per-draw path. Counted evaluations are the points passed to f (or to
log p(x, z), for an importance-weighted bound) per estimate; a point is relaxed when
any of its values is not an integer (one-hot, 0/1 and count outcomes all are).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

PROBE = 8  # estimates drawn to count evaluations of f and look for relaxed points


class _Counter:
    def __init__(self):
        self.rows = {"fn": 0, "joint": 0}
        self.relaxed = 0
        self.calls = 0

    def wrap(self, fn: Callable | None, kind: str) -> Callable | None:
        if fn is None:
            return None

        def counted(x):
            import torch

            self.rows[kind] += x.shape[0]
            self.calls += 1
            v = x.detach()
            tol = 1e-6 if v.dtype == torch.float32 else 1e-9
            if v.is_floating_point() and not bool(((v - v.round()).abs() <= tol * (1 + v.abs())).all()):
                self.relaxed += 1
            return fn(x)

        return counted


def probe(problem, estimator, seed: int) -> tuple[float, bool]:
    """(evaluations of f per estimate, whether f saw a non-discrete point) on PROBE estimates."""
    from .engine import init_state, per_draw_gradients
    from .view import View
    from .noise import NoiseSource

    counter = _Counter()
    probed = copy.copy(problem)
    f = problem.objective
    probed.objective = dataclasses.replace(f, fn=counter.wrap(f.fn, "fn"), log_joint=counter.wrap(f.log_joint, "joint"))
    view = View(probed, estimator)
    state = init_state(view, estimator, seed)
    p = view.template.params
    noise = NoiseSource(seed, "verify-probe", p.device, p.dtype).draw_all(estimator.noise(view.template), 0, PROBE)
    per_draw_gradients(view, estimator, state, noise)
    return max(counter.rows.values()) / PROBE, counter.relaxed > 0


def declared_evaluations(estimator, template) -> int | None:
    """The declared evaluations per estimate of this configuration on ``template`` (PerCategory needs it).

    None when the declaration cannot be evaluated there (a broken plugin: its measurement says why).
    """
    try:
        return int(estimator.n_evaluations(template))
    except Exception:
        return None
