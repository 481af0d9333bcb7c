"""How one estimator sees a problem: natively, or through a categorical view.

Part of the contract between the core and tasks: a training task that runs an
estimator itself (tasks/mnist_vae/train.py) builds a :class:`View` exactly as the
measuring engine does, without importing the engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

from .contract import Estimator, Problem, Surrogate
from .errors import UserError
from .families.categorical import Distribution
from .families.sequence import CategoricalSequence


class View:
    """The problem as one estimator sees it: natively, or through a categorical view.

    A categorical estimator on Bernoulli variables sees two-category variables whose
    one-hot samples map back to 0/1 before f is evaluated; on a decision sequence
    (bench/families/sequence.py) it sees one decision at a time (``stepwise``).
    """

    def __init__(self, problem: Problem, estimator: Estimator):
        self.problem = problem
        native = problem.family
        if native in estimator.families or "*" in estimator.families:
            self.family, self._viewed = native, False
        elif "categorical" in estimator.families:
            self.family, self._viewed = "categorical", True
        else:
            raise UserError(
                f"{estimator.name} handles {'/'.join(estimator.families)} variables; this task's are {native}"
            )
        template = problem.distribution(replicate(problem.parameters(), 1))
        self.stepwise = self._viewed and isinstance(template, CategoricalSequence)
        if self._viewed and not self.stepwise and template.as_categorical() is None:
            raise UserError(f"{estimator.name} needs a categorical view of {native} variables, which has none")
        self._native = type(template)
        f = problem.objective
        if self._viewed:
            to_native = self._native.from_categorical
            joint = None if f.log_joint is None else (lambda x: f.log_joint(to_native(x)))
            self.objective = dataclasses.replace(f, fn=lambda x: f.fn(to_native(x)), log_joint=joint)
        else:
            self.objective = f
        # A step-by-step estimator declares its noise for every decision at once ([*batch, T, K]).
        self.template = (template.step_template() if self.stepwise
                         else self.distribution(replicate(problem.parameters(), 1)))
        # A task's masks can depend on its configuration (toy-quadratic's mask=...), so the
        # declarations alone cannot refuse every pair: check the distribution itself.
        if getattr(self.template, "mask", None) is not None and not estimator.capability("masks"):
            raise UserError(f"{estimator.label} does not support masked categories and this task masks some; "
                            "choose an estimator that declares masks (gradbench list estimators) or drop the mask")

    def distribution(self, params: dict[str, Tensor]) -> Distribution:
        dist = self.problem.distribution(params)
        return dist.as_categorical() if self._viewed and not self.stepwise else dist

    def surrogate(self, estimator: Estimator, dist: Distribution, noise: dict[str, Tensor], state: Any) -> Surrogate:
        """The estimator's surrogate on this view (a decision sequence brings its own objective)."""
        if isinstance(dist, CategoricalSequence):
            return dist.surrogate(estimator, noise, state, self.stepwise)
        return estimator.surrogate(dist, self.objective, noise, state)


def replicate(params: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    """Independent leaf copies ``[n, *shape]`` of each parameter group, requiring grad."""
    return {k: p.detach().unsqueeze(0).expand(n, *p.shape).clone().requires_grad_(True) for k, p in params.items()}
