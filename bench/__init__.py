"""gradbench: benchmarking gradient estimators for discrete random variables.

The public surface is re-exported here lazily, so ``import gradbench`` (and the
command line's ``list`` and ``--help``) never pay for importing torch:

    from gradbench import Estimator, Surrogate, param, ESTIMATORS

The registries are ``gradbench.ESTIMATORS`` and ``gradbench.TASKS`` (the objects
``gradbench.registry.estimators`` and ``gradbench.registry.tasks``). The names
``gradbench.estimators`` and ``gradbench.tasks`` are the subpackages of built-in
modules and nothing else: one public name, one thing.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Estimator": "contract", "Surrogate": "contract", "Task": "contract", "Problem": "contract", "Chunk": "contract",
    "Categorical": "families.categorical", "Bernoulli": "families.categorical", "Distribution": "families.categorical",
    "Objective": "families.categorical", "NoiseSpec": "noise", "NoiseSource": "noise",
    "param": "params", "ESTIMATORS": "registry", "TASKS": "registry", "parse_spec": "spec",
    "MeasureConfig": "engine", "measure": "engine", "per_draw_gradients": "engine",
    "resolve_reference": "references", "read_results": "store", "UserError": "errors",
    "measure_gradients": "api",
}

# Exported names that differ from the attribute they stand for.
_ATTRIBUTE = {"ESTIMATORS": "estimators", "TASKS": "tasks"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradbench' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), _ATTRIBUTE.get(name, name))
