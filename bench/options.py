"""The options of a run, defined once: name, type, default, help and validation.

:class:`RunOptions` is the record of them (kept in each run's sidecar and each sweep
cell's identity). The command line's ``gradbench run`` and ``gradbench sweep`` make
their flags from these fields (cli.py), suites check their keys and types against
them, and :meth:`RunOptions.check` is the one place their values are validated.
:data:`THREADS` is the one process setting both commands share (not a measurement
option: threads never change a float64 number, see tests/benchmarks/threads.py).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UserError

ENGINES = ("vectorized", "loop")
REFERENCE_MODES = ("auto", "exact", "reinforce")
DTYPES = ("float32", "float64")
MIN_REFERENCE_SAMPLES = 40  # at least 20 groups of 2 draws for a REINFORCE-LOO reference
SEED_RANGE = (0, (1 << 63) - 1)  # what the results' int64 column and torch's generator both take
MAX_DRAWS = 10**9  # estimates, reference draws or warm-up steps: beyond it a run takes days, not minutes


def option(default: Any, help: str, check: Callable[[Any], str | None] | None = None, cli: bool = True):
    """A dataclass field that is also a command-line option.

    ``check(value)`` returns the error message for a bad value (None when fine);
    ``cli=False`` keeps the field off the generated flags (a command declares it itself).
    """
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "cli": cli})


def _seed(v: Any) -> str | None:
    low, high = SEED_RANGE
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        return f"--seed must be an integer from {low} to {high:,} (2^63 − 1), got {v!r}"
    return None


def _draws(flag: str, low: int, why: str, optional: bool = True) -> Callable[[Any], str | None]:
    """``low`` ≤ v ≤ MAX_DRAWS (None allowed when optional): absurd sizes are refused before compute."""
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        if v < low:
            return f"{flag} must be at least {low}{why}, got {v}"
        if v > MAX_DRAWS:
            return (f"{flag} {v:,} is beyond what a run can draw in reasonable time (at most {MAX_DRAWS:,}); "
                    "use a smaller value, or several seeds with 'gradbench sweep'")
        return None
    return check


def check_seed(seed: Any) -> None:
    """Raise a UserError unless ``seed`` is in SEED_RANGE (run, sweep seeds and ranges)."""
    message = _seed(seed)
    if message:
        raise UserError(message)


def _one_of(choices: tuple[str, ...], what: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"unknown {what} {v!r}; choose one of {', '.join(choices)}"


@dataclass(frozen=True)
class RunOptions:
    """Options of a run (the CLI's flags); recorded in full in the run's sidecar."""

    samples: int | None = option(
        None, "Gradient estimates per estimator (S; default: the task's, 10,000 for toy tasks).",
        _draws("--samples", 2, " (variance needs two estimates)"))
    seed: int = option(0, "Seed of all noise; same seed, same numbers.", _seed)
    out: str = option("results", "Results folder; each run adds its own subfolder.", cli=False)
    engine: str = option("vectorized", "vectorized, or loop (one autograd call per draw; the reference "
                         "implementation).", _one_of(ENGINES, "engine"))
    device: str = option(
        "auto", "auto (CUDA when available), cpu or cuda.",
        lambda v: None if v in ("auto", "cpu") or v.startswith("cuda")
        else f"unknown device {v!r}; choose auto, cpu or cuda")
    dtype: str | None = option(
        None, "float32 or float64 (default: the task's; float64 for toy tasks).",
        lambda v: None if v is None or v in DTYPES else f"unknown dtype {v!r}; choose float32 or float64")
    reference: str = option("auto", "auto (exact when enumerable), exact, or reinforce (REINFORCE with a "
                            "leave-one-out baseline).", _one_of(REFERENCE_MODES, "reference"))
    reference_samples: int | None = option(
        None, "Draws of f behind a REINFORCE reference (default: the task's, 1,000,000 for toy tasks).",
        _draws("--reference-samples", MIN_REFERENCE_SAMPLES, ""))
    chunk_size: int = option(
        1 << 16, "Estimates drawn per vectorised chunk (memory knob; results do not depend on it beyond rounding).",
        lambda v: None if 1 <= v <= MAX_DRAWS else f"--chunk-size must be from 1 to {MAX_DRAWS:,}, got {v}")
    warmup: int = option(
        1000, "Steps that adapt a stateful estimator's state before measuring with it frozen.",
        _draws("--warmup", 0, "", optional=False))

    def check(self) -> None:
        """Raise a UserError naming the first bad value and its fix."""
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name))


def check_value(name: str, value: Any) -> None:
    """Validate one run option (also used by the engine and references when called directly)."""
    check = _FIELDS[name].metadata["check"]
    message = check(value) if check is not None else None
    if message:
        raise UserError(message)


def cli_fields() -> list[dataclasses.Field]:
    """The fields the commands make flags of, in order."""
    return [f for f in dataclasses.fields(RunOptions) if f.metadata["cli"]]


_FIELDS = {f.name: f for f in dataclasses.fields(RunOptions)}
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(RunOptions) if f.name != "out")


@dataclass(frozen=True)
class ProcessOption:
    """A setting of the process that runs measurements, not of the measurement."""

    name: str
    default: Any
    help: str
    check: Callable[[Any], str | None]

    def validate(self, value: Any) -> None:
        message = self.check(value)
        if message:
            raise UserError(message)


# Default 1 by measurement (tests/benchmarks/threads.py): on a shared 2-core machine torch's default
# thread count was slower for every toy task, much slower when the machine was busy; float64 numbers
# are identical at any count, and float32 ones are reproducible across machines only at a fixed count.
THREADS = ProcessOption(
    "threads", 1, "Torch threads per run or sweep cell (a Ray task asks for as many CPUs); 0 (run only): torch's default. "
    "Keep it fixed: float32 kernels round differently with other counts.",
    lambda v: None if 0 <= v <= 1024 else f"--threads must be at least 0 and at most 1024 (0: torch's default), got {v}")


def set_threads(threads: int | None) -> None:
    """Torch intra-op threads for this process (0 or None: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@contextmanager
def threads_set(threads: int | None):
    """Torch threads set to ``threads`` while the block runs, restored after (an in-process caller keeps its own)."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
