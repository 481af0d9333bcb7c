"""One registry type for estimators and tasks.

Entries are lazy ``"module:attr"`` targets. Built-in entries come with their
description, parameters and capabilities from ``catalog.json`` (generated from the
classes by ``python -m gradbench.registry``; a test keeps it current), so listing
and validating specs never imports torch. Third-party entries come from the
entry-point groups ``gradbench.estimators`` and ``gradbench.tasks`` and are
imported when first described. In-process code can use the ``register`` decorator.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import Any, Generic, TypeVar

from .errors import SpecError, UserError, did_you_mean  # noqa: F401  (did_you_mean: re-exported)
from .params import Param, declared_params, validate_kwargs
from .spec import Spec, parse_spec

T = TypeVar("T")

# The native family of decision sequences (gradbench.families.sequence; spelled out here so listing never imports torch).
SEQUENCE_FAMILY = "categorical-sequence"

# Modules whose classes make up the built-in catalog (imported only to regenerate it).
BUILTIN_MODULES = {
    "estimator": [
        "gradbench.estimators.score_function",
        "gradbench.estimators.relaxed",
        "gradbench.estimators.gumbel_rao",
        "gradbench.estimators.gst",
        "gradbench.estimators.nvil",
        "gradbench.estimators.vimco",
        "gradbench.estimators.taylor",
        "gradbench.estimators.binary",
        "gradbench.estimators.rebar",
        "gradbench.estimators.indecater",
        "gradbench.estimators.gengs",
        "gradbench.estimators.neuralsort",
        "gradbench.estimators.softsort",
        "gradbench.estimators.gumbel_sinkhorn",
        "gradbench.estimators.pl_relax",
    ],
    "task": [
        "gradbench.tasks.toy",
        "gradbench.tasks.toy_latent",
        "gradbench.tasks.counts",
        "gradbench.tasks.toy_permutation",
        "gradbench.tasks.learn_to_sort",
        "gradbench.tasks.mnist_vae.task",
        "gradbench.tasks.listops.task",
    ],
}


class RegistryError(UserError):
    """A name clash or an unloadable entry."""


@dataclass(frozen=True)
class EntryInfo:
    """What is known about an entry without using it (serialisable)."""

    name: str
    target: str
    description: str
    version: int
    params: dict[str, Param]
    capabilities: dict[str, Any]
    source: str = "gradbench"
    commands: dict[str, str] = field(default_factory=dict)  # a task's `gradbench data` sub-commands

    def to_json(self) -> dict:
        out = {
            "target": self.target,
            "description": self.description,
            "version": self.version,
            "params": {k: p.to_json() for k, p in self.params.items()},
            "capabilities": self.capabilities,
        }
        if self.commands:
            out["commands"] = dict(self.commands)
        return out

    @classmethod
    def from_json(cls, name: str, data: dict, source: str = "gradbench") -> EntryInfo:
        params = {k: Param.from_json(p) for k, p in data["params"].items()}
        return cls(name, data["target"], data["description"], data["version"], params, data["capabilities"], source,
                   dict(data.get("commands", {})))

    @classmethod
    def from_class(cls, obj: type, target: str, source: str = "gradbench") -> EntryInfo:
        doc = (obj.__doc__ or "").strip().splitlines()
        description = getattr(obj, "description", None) or (doc[0] if doc else "")
        return cls(
            name=obj.name,
            target=target,
            description=description,
            version=int(getattr(obj, "version", 1)),
            params=declared_params(obj),
            capabilities=obj.capabilities_json(),
            source=source,
            commands=dict(getattr(obj, "data_commands", {})),
        )


@dataclass
class _Entry:
    target: str
    source: str
    info: EntryInfo | None = None
    obj: Any = None


@dataclass
class Registry(Generic[T]):
    """Named, lazily imported classes of one kind ("estimator" or "task")."""

    kind: str
    group: str
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _loaded: bool = False

    # -- registration -----------------------------------------------------------------
    def register(self, obj: type[T]) -> type[T]:
        """Class decorator: register ``obj`` under ``obj.name``."""
        name = obj.name
        target = f"{obj.__module__}:{obj.__qualname__}"
        entry = self._entries.get(name)
        if entry is not None and entry.target != target:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by {entry.target} ({entry.source}) and by {target}; "
                "rename one of them"
            )
        if entry is None:
            entry = self._entries[name] = _Entry(target, "in-process")
        entry.obj = obj
        entry.info = EntryInfo.from_class(obj, target, entry.source)
        return obj

    def add(self, name: str, target: str, source: str, info: EntryInfo | None = None) -> None:
        """Add a lazy entry; a second entry under the same name is an error."""
        old = self._entries.get(name)
        if old is not None:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by {old.target} ({old.source}) and by {target} "
                f"({source}); uninstall or rename one of them"
            )
        self._entries[name] = _Entry(target, source, info)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        registered = dict(self._entries)  # decorator registrations made before first use
        self._entries.clear()
        for name, data in load_catalog().get(self.kind, {}).items():
            self.add(name, data["target"], "gradbench", EntryInfo.from_json(name, data))
        for ep in metadata.entry_points(group=self.group):
            dist = getattr(ep, "dist", None)
            self.add(ep.name, ep.value, f"plugin {dist.name if dist else ep.value}")
        for name, entry in registered.items():
            if name in self._entries and self._entries[name].target == entry.target:
                # The class itself is at hand: describe it from the class, not the catalog's JSON.
                self._entries[name].obj = entry.obj
                self._entries[name].info = EntryInfo.from_class(entry.obj, entry.target)
            else:
                self.add(name, entry.target, entry.source, entry.info)
                self._entries[name].obj = entry.obj

    # -- lookup -------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def _entry(self, name: str) -> _Entry:
        self._ensure_loaded()
        entry = self._entries.get(name)
        if entry is None:
            raise SpecError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)} "
                f"(run 'gradbench list {self.kind}s' to see all {len(self._entries)})"
            )
        return entry

    def info(self, name: str) -> EntryInfo:
        """Description, parameters and capabilities; imports only plugin entries."""
        entry = self._entry(name)
        if entry.info is None:
            obj = self.load(name)
            entry.info = EntryInfo.from_class(obj, entry.target, entry.source)
        return entry.info

    def load(self, name: str) -> type[T]:
        """Import and return the class registered under ``name``."""
        entry = self._entry(name)
        if entry.obj is None:
            module_name, _, attr = entry.target.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise RegistryError(f"{self.kind} {name!r} ({entry.source}) cannot be loaded from {entry.target}: {exc}") from None
            if getattr(obj, "name", None) != name:
                raise RegistryError(
                    f"{self.kind} {name!r} ({entry.source}) points at {entry.target}, whose name is "
                    f"{getattr(obj, 'name', None)!r}; make the entry-point name match the class's 'name'"
                )
            entry.obj = obj
        return entry.obj

    # -- specs --------------------------------------------------------------------------
    def validate(self, spec: Spec | str) -> Spec:
        """Check a spec's name, keys, types and ranges; return it with coerced values."""
        spec = parse_spec(spec) if isinstance(spec, str) else spec
        info = self.info(spec.name)
        return Spec(spec.name, validate_kwargs(spec.name, info.params, spec.kwargs))

    def build(self, spec: Spec | str) -> T:
        """Validate a spec and construct the instance it names."""
        spec = self.validate(spec)
        cls = self.load(spec.name)
        # Lists become tuples: configured objects are frozen and hashable.
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.kwargs.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{spec.name}: {exc}") from None


def load_catalog() -> dict:
    """The built-in catalog: {kind: {name: EntryInfo json}}."""
    path = resources.files("gradbench").joinpath("catalog.json")
    if not path.is_file():  # only while bootstrapping the catalog itself
        return {}
    return json.loads(path.read_text())


def build_catalog() -> dict:
    """Import the built-in modules and describe every class they register."""
    catalog: dict[str, dict] = {}
    for kind, modules in BUILTIN_MODULES.items():
        registry = REGISTRIES[kind]
        if not registry._loaded:
            registry._loaded = True  # from the classes alone: neither the old catalog nor plugins
        for module in modules:
            importlib.import_module(module)
        catalog[kind] = {
            name: entry.info.to_json()
            for name, entry in sorted(registry._entries.items())
            if entry.obj is not None and entry.target.split(":")[0] in modules
        }
    return catalog


def resolve_capability(value: Any, params: dict[str, Param], kwargs: dict[str, Any] | None = None) -> Any:
    """A capability may name a boolean parameter ("hard", or "!hard" for its negation)."""
    if not isinstance(value, str) or value.lstrip("!") not in params:
        return value
    name = value.lstrip("!")
    setting = (kwargs or {}).get(name, params[name].default)
    return (not setting) if value.startswith("!") else bool(setting)


def compatibility(estimator: EntryInfo, task: EntryInfo, kwargs: dict[str, Any] | None = None) -> tuple[bool, str]:
    """Whether an estimator (configured with ``kwargs``) can run on a task, from declarations only.

    Returns (True, family) with the family the estimator will see (the task's own, or a
    view such as the two-category view of a Bernoulli variable), or (False, reason).
    """
    est, tsk = estimator.capabilities, task.capabilities
    cap = lambda key: resolve_capability(est.get(key), estimator.params, kwargs)  # noqa: E731
    if "*" in est["families"]:
        family = tsk["families"][0]
    else:
        family = next((f for f in tsk["families"] if f in est["families"]), None)
    if family is None:
        return False, f"handles {'/'.join(est['families'])} variables, the task has {'/'.join(tsk['families'])}"
    if cap("relaxed_f") and not tsk.get("relaxed_f"):
        return False, "evaluates f at relaxed (non-discrete) points, which this task's f does not accept"
    if cap("differentiable_f") and not tsk.get("differentiable_f"):
        return False, "needs a differentiable f"
    if tsk.get("masks") and not cap("masks"):
        return False, "does not support masked categories"
    if family == "categorical" and tsk["families"][0] == SEQUENCE_FAMILY:
        # Seen one decision at a time (bench/families/sequence.py): m evaluations per decision
        # would compound to m^T, and a state adapted per decision is ill-defined.
        evaluations = est.get("evaluations", 1)
        if isinstance(evaluations, str) and evaluations in estimator.params:  # else a formula, e.g. "K·D + 1"
            evaluations = (kwargs or {}).get(evaluations, estimator.params[evaluations].default)
        if evaluations != 1:
            return False, (f"evaluates f {evaluations} times per decision, which a sequence of T merge decisions "
                           f"would compound to {evaluations}^T")
        if cap("stateful"):
            return False, "is stateful, and its state cannot adapt to one decision of a sequence at a time"
    for need in est.get("requires", []):
        if need not in tsk.get("offers", []):
            return False, f"needs a task that offers {need}"
    return True, family


estimators: Registry = Registry("estimator", "gradbench.estimators")
tasks: Registry = Registry("task", "gradbench.tasks")
REGISTRIES = {"estimator": estimators, "task": tasks}


def _write_catalog() -> None:
    path = resources.files("gradbench").joinpath("catalog.json")
    text = json.dumps(build_catalog(), indent=1, ensure_ascii=False) + "\n"
    with open(str(path), "w") as fh:
        fh.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    # Run the imported module's copy, whose registries the estimator modules fill.
    from gradbench.registry import _write_catalog as write

    write()
