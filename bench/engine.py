"""Draw S gradient estimates in chunks and accumulate their statistics.

The vectorised engine gives every estimate its own copy of the parameters
(``[n, *shape]``), builds all ``n`` surrogates at once and differentiates their sum:
one backward pass, ``n`` separate gradients, no Python loop per draw. The loop
engine does the same one estimate at a time with plain autograd; it is the
reference the vectorised engine is tested against, and both see identical noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .contract import Chunk, Estimator, Problem
from .errors import UserError
from .families.categorical import Distribution
from .noise import NoiseSource, derive_seed
from .options import ENGINES, check_value  # noqa: F401  (ENGINES: re-exported)
from .stats import GroupStats, GroupSummary
from .view import View, replicate  # noqa: F401  (re-exported: the engine's callers used to find them here)

_CHUNK_VALUES = 1 << 23  # noise values per chunk: bounds memory whatever the estimator draws
MAX_NOISE_VALUES = 1 << 27  # of one estimate (1 GiB in float64): a chunk cannot split one estimate


@dataclass(frozen=True)
class MeasureConfig:
    """How many estimates, how they are drawn, and how state is warmed up."""

    samples: int
    seed: int = 0
    chunk_size: int = 1 << 16
    engine: str = "vectorized"
    warmup: int = 0
    batches: int = 20


@dataclass
class Measurement:
    """Result of measuring one estimator on one problem.

    extra: descriptive facts ``{name: float}`` (problem and estimator diagnostics), stored
    as metric rows without intervals.
    """

    estimator: Estimator
    family: str
    groups: dict[str, GroupSummary]
    seconds: float
    warmup: int
    state: Any = None
    extra: dict = field(default_factory=dict)


def per_draw_gradients(view: View, estimator: Estimator, state: Any, noise: dict[str, Tensor],
                       engine: str = "vectorized") -> dict[str, Tensor]:
    """Gradient estimates ``{group: [n, P]}`` for the given noise (``[n, ...]`` per name)."""
    n = next(iter(noise.values())).shape[0]
    if engine == "vectorized":
        return _gradients(view, estimator, state, noise, n)
    if engine == "loop":
        rows = [_gradients(view, estimator, state, {k: v[i : i + 1] for k, v in noise.items()}, 1) for i in range(n)]
        return {g: torch.cat([r[g] for r in rows]) for g in rows[0]}
    check_value("engine", engine)  # raises: the one definition of the engine option
    raise AssertionError(f"engine {engine!r} passed its check but has no implementation")


def _gradients(view: View, estimator: Estimator, state: Any, noise: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    params = replicate(view.problem.parameters(), n)
    dist = view.distribution(params)
    out = view.surrogate(estimator, dist, noise, state)
    grads = torch.autograd.grad(out.value.sum(), list(params.values()), allow_unused=True)
    return {
        k: (g if g is not None else torch.zeros_like(p)).reshape(n, -1)
        for (k, p), g in zip(params.items(), grads)
    }


def plan_chunks(samples: int, batches: int, chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """(start, stop, batch) ranges covering ``samples`` estimates; no chunk spans two batches.

    A generator: memory stays bounded however many chunks there are.
    """
    batches = max(1, min(batches, samples // 2))
    bounds = [round(b * samples / batches) for b in range(batches + 1)]
    for b in range(batches):
        for start in range(bounds[b], bounds[b + 1], chunk_size):
            yield start, min(start + chunk_size, bounds[b + 1]), b


def chunk_size_for(estimator: Estimator, template: Distribution, requested: int) -> int:
    """Cap the chunk so the noise of one chunk stays near _CHUNK_VALUES values."""
    per_estimate = noise_per_estimate(estimator, template)
    return max(1, min(requested, _CHUNK_VALUES // max(1, per_estimate)))


def noise_per_estimate(estimator: Estimator, template: Distribution) -> int:
    """Noise values one estimate draws; refused (UserError) beyond MAX_NOISE_VALUES, before any is drawn."""
    per_estimate = sum(spec.numel for spec in estimator.noise(template).values())
    if per_estimate > MAX_NOISE_VALUES:
        raise UserError(f"{estimator.label} draws {per_estimate:,} noise values per estimate (at most "
                        f"{MAX_NOISE_VALUES:,}, about 1 GiB); give it smaller sizes")
    return per_estimate


def warm_up(view: View, estimator: Estimator, state: Any, steps: int, seed: int) -> Any:
    """Adapt an estimator's state for ``steps`` single-estimate steps at fixed parameters."""
    noise_source = NoiseSource(seed, "warmup", *_device_dtype(view))
    specs = estimator.noise(view.template)
    for step in range(steps):
        noise = noise_source.draw_all(specs, step, step + 1)
        params = replicate(view.problem.parameters(), 1)
        dist = view.distribution(params)
        out = view.surrogate(estimator, dist, noise, state)
        state = estimator.update(state, dist, view.objective, noise, out)
    return state


def init_state(view: View, estimator: Estimator, seed: int) -> Any:
    generator = torch.Generator(view.template.params.device)
    generator.manual_seed(derive_seed(seed, "init", estimator.name))
    return estimator.init(view.template, generator)


def measure(problem: Problem, estimator: Estimator, reference: dict[str, Tensor] | None,
            config: MeasureConfig, reference_variance: dict[str, float] | None = None,
            progress: Callable[[int], None] | None = None, state: Any = None) -> Measurement:
    """Draw ``config.samples`` estimates and summarise them per parameter group.

    reference: ``{group: [P]}`` (or None when measuring the reference itself).
    state: an already adapted state; otherwise the estimator's initial state,
    warmed up for ``config.warmup`` steps when the estimator is stateful.
    """
    if config.samples < 2:
        raise UserError(f"samples must be at least 2, got {config.samples}")
    started = time.perf_counter()
    view = View(problem, estimator)
    noise_per_estimate(estimator, view.template)  # before warm-up draws any
    warmup = 0
    if state is None:
        state = init_state(view, estimator, config.seed)
        if estimator.stateful and config.warmup:
            state = warm_up(view, estimator, state, config.warmup, config.seed)
            warmup = config.warmup
    params = problem.parameters()
    device, dtype = _device_dtype(view)
    accumulators = {
        g: GroupStats(p.numel(), None if reference is None else reference[g].reshape(-1)) for g, p in params.items()
    }
    specs = estimator.noise(view.template)
    noise_source = NoiseSource(config.seed, "measure", device, dtype)
    chunk = chunk_size_for(estimator, view.template, config.chunk_size)
    if problem.chunk_limit is not None:  # counted in evaluations of f: RLOO(m) holds m per estimate
        chunk = min(chunk, max(1, problem.chunk_limit // estimator.n_evaluations(view.template)))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for start, stop, batch in plan_chunks(config.samples, config.batches, chunk):
        t0 = time.perf_counter()
        noise = noise_source.draw_all(specs, start, stop)
        chunks = problem.chunk_stats(estimator, state, noise, config.engine, reference)
        if chunks is None:
            grads = per_draw_gradients(view, estimator, state, noise, config.engine)
            chunks = {g: Chunk.from_gradients(v, accumulators[g].reference) for g, v in grads.items()}
        sync()  # so the chunk's time is its compute, not just its launch
        seconds = time.perf_counter() - t0
        for g, acc in accumulators.items():
            acc.add(chunks[g], batch, seconds)
        if progress is not None:
            progress(stop - start)
    rv = reference_variance or {}
    summaries = {g: acc.finish(rv.get(g, 0.0)) for g, acc in accumulators.items()}
    extra = {**problem.diagnostics(view.family), **estimator.diagnostics(view.template)}
    return Measurement(estimator, view.family, summaries, time.perf_counter() - started, warmup, state, extra)


def _device_dtype(view: View) -> tuple[torch.device, torch.dtype]:
    p = view.template.params
    return p.device, p.dtype


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)

