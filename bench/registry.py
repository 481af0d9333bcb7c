"""One registry type for estimators and tasks.

Entries are lazy ``"module:attr"`` targets. Built-in entries come with their
description, parameters and capabilities from ``catalog.json``, so listing and
validating specs never imports torch. The catalog is generated from every module
found under the ``gradbench.estimators`` and ``gradbench.tasks`` packages (a new
built-in is one file there) by ``gradbench regenerate --only catalog``; a test keeps
it current. Third-party entries come from the
entry-point groups ``gradbench.estimators`` and ``gradbench.tasks`` and are
imported when first described. In-process code can use the ``register`` decorator.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import Any, Generic, TypeVar

from . import capabilities
from .errors import SpecError, UserError, did_you_mean  # noqa: F401  (did_you_mean: re-exported)
from .params import Param, declared_params, validate_kwargs
from .spec import Spec, parse_spec

T = TypeVar("T")

# The native family of decision sequences (gradbench.families.sequence; spelled out here so listing never imports torch).
SEQUENCE_FAMILY = "categorical-sequence"

# Packages whose modules make up the built-in catalog (walked and imported only to regenerate it).
BUILTIN_PACKAGES = {"estimator": "gradbench.estimators", "task": "gradbench.tasks"}


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
    capabilities: dict[str, Any]  # as declared: plain values, FromParam, PerCategory (gradbench.capabilities)
    source: str = "gradbench"
    commands: dict[str, str] = field(default_factory=dict)  # a task's `gradbench data` sub-commands

    def to_json(self) -> dict:
        out = {
            "target": self.target,
            "description": self.description,
            "version": self.version,
            "params": {k: p.to_json() for k, p in self.params.items()},
            "capabilities": {k: capabilities.to_json(v) for k, v in self.capabilities.items()},
        }
        if self.commands:
            out["commands"] = dict(self.commands)
        return out

    @classmethod
    def from_json(cls, name: str, data: dict, source: str = "gradbench") -> EntryInfo:
        params = {k: Param.from_json(p) for k, p in data["params"].items()}
        caps = {k: capabilities.from_json(v) for k, v in data["capabilities"].items()}
        return cls(name, data["target"], data["description"], data["version"], params, caps, source,
                   dict(data.get("commands", {})))

    def capability(self, key: str, kwargs: dict[str, Any] | None = None, default: Any = None) -> Any:
        """A capability for the configuration ``kwargs`` (defaults elsewhere); FromParam resolved."""
        return capabilities.resolve(self.capabilities.get(key, default), self.params, kwargs)

    @classmethod
    def from_class(cls, obj: type, target: str, source: str = "gradbench") -> EntryInfo:
        doc = (obj.__doc__ or "").strip().splitlines()
        try:
            declared = obj.capabilities_json()
        except TypeError as exc:  # a capability declared in the old string form ("!hard", "m")
            raise RegistryError(f"{getattr(obj, 'name', target)!r} ({source}): {exc}") from None
        description = getattr(obj, "description", None) or (doc[0] if doc else "")
        return cls(
            name=obj.name,
            target=target,
            description=description,
            version=int(getattr(obj, "version", 1)),
            params=declared_params(obj),
            capabilities={k: capabilities.from_json(v) for k, v in declared.items()},
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


def builtin_modules(kind: str) -> list[str]:
    """Every module under the built-in package of ``kind``, found by walking it (sorted)."""
    package = importlib.import_module(BUILTIN_PACKAGES[kind])
    found = pkgutil.walk_packages(package.__path__, prefix=package.__name__ + ".")
    return sorted(info.name for info in found)


def build_catalog() -> dict:
    """Import every built-in module and describe every class they register."""
    catalog: dict[str, dict] = {}
    for kind, package in BUILTIN_PACKAGES.items():
        registry = REGISTRIES[kind]
        if not registry._loaded:
            registry._loaded = True  # from the classes alone: neither the old catalog nor plugins
        for module in builtin_modules(kind):
            importlib.import_module(module)
        catalog[kind] = {
            name: entry.info.to_json()
            for name, entry in sorted(registry._entries.items())
            if entry.obj is not None and entry.target.startswith(package + ".")
        }
    return catalog


def compatibility(estimator: EntryInfo, task: EntryInfo, kwargs: dict[str, Any] | None = None) -> tuple[bool, str]:
    """Whether an estimator (configured with ``kwargs``) can run on a task, from declarations only.

    Returns (True, family) with the family the estimator will see (the task's own, or a
    view such as the two-category view of a Bernoulli variable), or (False, reason).
    """
    est, tsk = estimator.capabilities, task.capabilities
    cap = lambda key: estimator.capability(key, kwargs)  # noqa: E731
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
        evaluations = estimator.capability("evaluations", kwargs, default=1)  # PerCategory: K·D + c, never 1
        if evaluations != 1:
            base = f"({evaluations})" if isinstance(evaluations, capabilities.PER_TASK) else evaluations
            return False, (f"evaluates f {evaluations} times per decision, which a sequence of T merge decisions "
                           f"would compound to {base}^T")
        if cap("stateful"):
            return False, "is stateful, and its state cannot adapt to one decision of a sequence at a time"
    for need in est.get("requires", []):
        if need not in tsk.get("offers", []):
            return False, f"needs a task that offers {need}"
    return True, family


estimators: Registry = Registry("estimator", "gradbench.estimators")
tasks: Registry = Registry("task", "gradbench.tasks")
REGISTRIES = {"estimator": estimators, "task": tasks}


def catalog_text() -> str:
    """catalog.json's text for the classes as they are now (imports every built-in module)."""
    return json.dumps(build_catalog(), indent=1, ensure_ascii=False) + "\n"


def catalog_path() -> str:
    return str(resources.files("gradbench").joinpath("catalog.json"))


if __name__ == "__main__":
    # Run the imported module's copy, whose registries the estimator modules fill. With --print
    # the text goes to stdout (gradbench regenerate reads it from a fresh process); otherwise
    # catalog.json alone is written (`gradbench regenerate --only catalog` also writes its page).
    import sys

    from gradbench.registry import catalog_path as _path, catalog_text as _text

    if sys.argv[1:] == ["--print"]:
        sys.stdout.write(_text())
    else:
        with open(_path(), "w") as fh:
            fh.write(_text())
        print(f"wrote {_path()} (docs/estimators.md: gradbench regenerate --only catalog)")
