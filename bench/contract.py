"""The two interfaces everything else plugs into: Estimator and Task (with its Problem).

An estimator turns distribution parameters, the objective and explicit noise into a
*surrogate*: a tensor ``[n]`` whose gradient with respect to the parameters is, for
each of the ``n`` estimate copies, one gradient estimate (score function:
``f + sg(f)·(log p − sg(log p))``; straight-through: ``f(D − sg(y) + y)``). It never
draws random numbers itself; it declares the noise it needs. Stateful estimators
(moving-average baselines, learned control variates) get their state passed in and
return the new state from ``update``; the runner decides when state adapts.

A task describes an expectation ``E_{x~p_θ}[f(x)]`` (a :class:`Problem`) at fixed
parameters, and for training tasks also how to train with an estimator.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import capabilities
from .capabilities import PER_TASK, FromParam, PerCategory, PerVariable
from .families.categorical import Distribution, Objective
from .noise import NoiseSpec
from .params import declared_params, plain


@dataclass
class Surrogate:
    """What an estimator returns: ``value [n]`` (sum over units) plus anything ``update`` needs."""

    value: Tensor
    aux: dict[str, Any] = field(default_factory=dict)


class _Configured:
    """Shared by estimators and tasks: declared params, a label, capabilities as JSON."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    _capability_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def capabilities_json(cls) -> dict:
        """Declared capabilities as JSON (typed ones as objects, see gradbench.capabilities)."""
        declared = declared_params(cls)
        out = {}
        for key in cls._capability_fields:
            value = getattr(cls, key)
            if isinstance(value, str) and (value.lstrip("!") in declared or value.startswith("!")):
                fix = f"FromParam({value.lstrip('!')!r}{', negate=True' if value.startswith('!') else ''})"
                raise TypeError(f"{cls.__name__}.{key} = {value!r} names a parameter as a string; declare {fix} "
                                "(from gradbench.capabilities import FromParam)")
            out[key] = capabilities.to_json(value)
        return out

    def capability(self, key: str) -> Any:
        """A declared capability for this configuration (FromParam resolved; PerCategory as declared)."""
        return capabilities.resolve(getattr(type(self), key), declared_params(type(self)),
                                    {k: getattr(self, k) for k in declared_params(type(self))})

    def params_dict(self) -> dict[str, Any]:
        """All declared parameters with their values (defaults filled in)."""
        return {k: plain(getattr(self, k)) for k in declared_params(type(self))}

    def params_json(self) -> str:
        return json.dumps(self.params_dict(), sort_keys=True)

    def changed_params(self) -> dict[str, Any]:
        """Parameters that differ from their defaults."""
        declared = declared_params(type(self))
        return {k: v for k, v in self.params_dict().items() if v != plain(declared[k].default)}

    @property
    def label(self) -> str:
        """The spec that names this configuration, e.g. ``gst(gap=1.2)``."""
        changed = self.changed_params()
        if not changed:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"


class Estimator(_Configured, ABC):
    """A gradient estimator. Subclasses are frozen dataclasses of their hyperparameters.

    Capabilities (class attributes, listed by ``gradbench list``):
      unbiased: E[estimate] equals the true gradient.
      families: distribution families handled ("categorical", "bernoulli", "poisson", ...).
          A task whose variables have a categorical view (a Bernoulli variable as two
          categories) can be used by categorical estimators.
      evaluations: evaluations of f per estimate: an int, ``FromParam("m")`` for the
          hyperparameter that sets it, ``PerCategory(plus=1)`` for K·D + 1, or
          ``PerVariable("k", plus=1)`` for min(k, K)·D + 1.
      differentiable_f: uses df/dx (straight-through and relaxed estimators).
      relaxed_f: evaluates f at non-discrete points (relaxed samples).
      masks: supports categoricals with masked (invalid) categories.
      stateful: carries state that ``update`` adapts.
      requires: task features needed (e.g. "importance_weights" for VIMCO).
    unbiased, differentiable_f, relaxed_f and masks may also be ``FromParam("hard",
    negate=True)``: set by a boolean hyperparameter (here: true when hard=False).
    The conformance suite checks every declaration (tests/test_conformance.py).
    """

    unbiased: ClassVar[bool | FromParam]
    families: ClassVar[tuple[str, ...]] = ("categorical",)
    evaluations: ClassVar[int | FromParam | PerCategory | PerVariable] = 1
    differentiable_f: ClassVar[bool | FromParam] = False
    relaxed_f: ClassVar[bool | FromParam] = False
    masks: ClassVar[bool | FromParam] = True
    stateful: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    _capability_fields = (
        "unbiased", "families", "evaluations", "differentiable_f", "relaxed_f", "masks", "stateful", "requires",
    )

    def n_evaluations(self, dist: Distribution | None = None) -> int:
        """Evaluations of f per estimate for this configuration (on ``dist``, for PerCategory counts)."""
        evaluations = self.capability("evaluations")
        if isinstance(evaluations, PER_TASK):
            if dist is None:
                raise TypeError(f"{self.name}'s evaluations ({evaluations}) depend on the task: pass its distribution")
            return evaluations.count_for(dist)
        return int(evaluations)

    def noise(self, dist: Distribution) -> dict[str, NoiseSpec]:
        """Per-estimate noise this estimator needs; by default one exact sample's worth.

        Estimators asking for the same name and spec share draws (common random numbers).
        """
        return {"sample": dist.sample_noise()}

    def init(self, dist: Distribution, generator: torch.Generator) -> Any:
        """Initial state (None for stateless estimators)."""
        return None

    @abstractmethod
    def surrogate(self, dist: Distribution, f: Objective, noise: dict[str, Tensor], state: Any) -> Surrogate:
        """Surrogate ``[n]`` whose gradient w.r.t. ``dist.params`` is one estimate per copy.

        noise: tensors ``[n, *spec.shape]`` as declared by :meth:`noise`.
        """

    def update(self, state: Any, dist: Distribution, f: Objective, noise: dict[str, Tensor], out: Surrogate) -> Any:
        """New state after one step (stateless estimators return ``state``)."""
        return state

    def diagnostics(self, dist: Distribution) -> dict[str, float]:
        """Facts about this configuration on ``dist`` (GenGS: truncation level, dropped mass).

        Recorded with every measurement as extra metric rows (no interval). Called once per
        measurement, never in a hot loop, so it may compute on the host.
        """
        return {}


@dataclass
class Chunk:
    """Sufficient statistics of ``n`` estimates of one parameter group's gradient.

    total: ``[P]`` sum of the estimates. sq: ``[n]`` squared norm of each estimate.
    dot: ``[n]`` inner product of each estimate with the reference (zeros if none).
    """

    total: Tensor
    sq: Tensor
    dot: Tensor

    @classmethod
    def from_gradients(cls, grads: Tensor, reference: Tensor | None) -> Chunk:
        """From dense per-estimate gradients ``[n, P]``."""
        grads = grads.to(torch.float64)
        dot = grads @ reference if reference is not None else torch.zeros_like(grads[:, 0])
        return cls(grads.sum(0), (grads * grads).sum(1), dot)


class Problem(ABC):
    """``E_{x~p_θ}[f(x)]`` at fixed parameters θ: what a gradient measurement measures.

    family: the native distribution family of ``distribution(...)``.
    objective: f, with its declared properties.
    chunk_limit: most evaluations of f (estimates × evaluations per estimate) drawn
        at once, for problems whose memory per evaluation is large (a network per
        parameter copy); None leaves it to the runner.
    """

    family: ClassVar[str]
    objective: Objective
    chunk_limit: int | None = None

    @abstractmethod
    def parameters(self) -> dict[str, Tensor]:
        """Parameter groups at which the gradient is measured: name -> tensor ``[*shape]``."""

    @abstractmethod
    def distribution(self, params: dict[str, Tensor]) -> Distribution:
        """The distribution for parameter copies ``{name: [n, *shape]}``."""

    def exact_gradient(self) -> dict[str, Tensor] | None:
        """A closed-form gradient ``{name: [*shape]}``, or None to enumerate (or estimate)."""
        return None

    def for_estimator(self, estimator: Estimator) -> Problem:
        """The problem ``estimator`` is measured on; by default this one.

        An estimator of a different objective (VIMCO's m-sample bound) gets the problem
        of that objective here, so its reference is that objective's gradient.
        """
        return self

    def diagnostics(self, family: str) -> dict[str, float]:
        """Facts about this problem as seen through ``family`` (the native family or a view).

        Recorded with every measurement as extra metric rows (no interval), e.g. the tail
        mass a truncated enumeration or a truncated categorical view leaves out.
        """
        return {}

    def reinforce_reference(self, samples: int, seed: int, progress: Any = None) -> Any:
        """A task-specific REINFORCE reference (a ``references.Reference``), or None for the generic one.

        Neural tasks override this when the score has a closed form, so that a draw costs
        a forward pass of f only; ``samples`` draws, ``progress(k)`` after every k of them.
        """
        return None

    def chunk_stats(self, estimator: Estimator, state: Any, noise: dict[str, Tensor], engine: str,
                    reference: dict[str, Tensor] | None) -> dict[str, Chunk] | None:
        """Override to supply :class:`Chunk` statistics without dense per-draw gradients.

        Neural tasks use this to avoid forming one parameter-sized vector per draw.
        Returning None (the default) lets the runner differentiate per copy.
        """
        return None


class Task(_Configured, ABC):
    """A registered task. Subclasses are frozen dataclasses of their parameters.

    Capabilities:
      families: the families its variables can be presented as, native first.
      relaxed_f / differentiable_f: f accepts relaxed inputs / is differentiable in x.
      masks: its categoricals have masked categories.
      exact: an exact reference gradient is available.
      kind: "fixed" (measure at fixed parameters) or "training".
      groups: parameter groups measured.
      offers: extra features ("importance_weights").
    """

    families: ClassVar[tuple[str, ...]]
    relaxed_f: ClassVar[bool] = True
    differentiable_f: ClassVar[bool] = True
    masks: ClassVar[bool] = False
    exact: ClassVar[bool] = False
    kind: ClassVar[str] = "fixed"
    groups: ClassVar[tuple[str, ...]] = ()
    offers: ClassVar[tuple[str, ...]] = ()
    dtype: ClassVar[str] = "float64"
    default_samples: ClassVar[int] = 10_000  # estimates S when --samples is not given
    default_reference_samples: ClassVar[int] = 1_000_000  # draws behind a REINFORCE reference
    # Sub-commands of `gradbench data` this task contributes: {name: "module:function"}, a typer-annotated
    # function in a module that imports no torch (the CLI lists them from the catalog, loads one when run).
    data_commands: ClassVar[dict[str, str]] = {}
    _capability_fields = ("families", "relaxed_f", "differentiable_f", "masks", "exact", "kind", "groups", "offers")

    def problem(self, device: torch.device, dtype: torch.dtype) -> Problem:
        """The expectation to measure gradients of (fixed tasks)."""
        raise TypeError(f"task {self.name!r} is a {self.kind} task and has no fixed problem")
