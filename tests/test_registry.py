"""The registry: lazy built-in catalog, plugins, duplicates, suggestions."""

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from gradbench.contract import Estimator, Surrogate
from gradbench.errors import SpecError, did_you_mean
from gradbench.registry import (
    EntryInfo, Registry, RegistryError, build_catalog, compatibility, estimators, load_catalog, tasks,
)


def test_catalog_is_current():
    """catalog.json must describe the classes as they are (regenerate: gradbench regenerate --only catalog)."""
    fresh = json.loads(json.dumps(build_catalog()))
    assert fresh == load_catalog(), "catalog.json is stale: run `gradbench regenerate --only catalog`"


def test_every_builtin_loads_under_its_name():
    for registry in (estimators, tasks):
        for name in registry.names():
            cls = registry.load(name)
            assert cls.name == name
            assert EntryInfo.from_class(cls, registry.info(name).target).to_json() == registry.info(name).to_json()


def test_listing_and_validation_do_not_import_torch():
    code = (
        "import sys\n"
        "from gradbench.registry import estimators, tasks\n"
        "from gradbench.cli import app\n"
        "estimators.validate('gst(gap=1.2)'); tasks.validate('toy-quadratic')\n"
        "[estimators.info(n) for n in estimators.names()]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "gradbench", "list"], capture_output=True, text=True)
    assert out.returncode == 0
    assert " torch" not in out.stderr


def test_did_you_mean():
    assert did_you_mean("gsts", ["gst", "stgs"]) in ("; did you mean 'gst'?", "; did you mean 'stgs'?")
    assert did_you_mean("reinforse", ["reinforce", "rloo"]) == "; did you mean 'reinforce'?"
    assert did_you_mean("zzz", ["gst"]) == ""


def test_unknown_name_suggests():
    with pytest.raises(SpecError, match=r"unknown estimator 'gts'; did you mean 'gst'\?"):
        estimators.validate("gts")


def test_unknown_key_lists_parameters():
    with pytest.raises(SpecError, match=r"gst: unknown parameter 'tua'; did you mean 'tau'\? \(parameters: gap, tau, hard\)"):
        estimators.validate("gst(tua=1.0)")


def _estimator_class(name):
    @dataclass(frozen=True)
    class Dummy(Estimator):
        """A test estimator."""

        unbiased = True

        def surrogate(self, dist, f, noise, state):
            return Surrogate(f(dist.sample(noise["sample"])))

    Dummy.name = name
    return Dummy


def test_decorator_registration_and_duplicates():
    registry = Registry("estimator", "gradbench.test-no-such-group")
    registry._loaded = True
    cls = registry.register(_estimator_class("dummy"))
    assert registry.load("dummy") is cls
    assert registry.info("dummy").description == "A test estimator."
    with pytest.raises(RegistryError, match="registered twice"):
        other = _estimator_class("dummy")
        other.__qualname__ = "Other"
        registry.register(other)
    with pytest.raises(RegistryError, match="registered twice"):
        registry.add("dummy", "some.module:Thing", "plugin x")


def test_lazy_entry_imports_on_load(tmp_path, monkeypatch):
    module = tmp_path / "lazy_est_mod.py"
    module.write_text(
        "from dataclasses import dataclass\n"
        "from gradbench.contract import Estimator, Surrogate\n"
        "@dataclass(frozen=True)\n"
        "class Lazy(Estimator):\n"
        "    '''Lazily loaded.'''\n"
        "    name = 'lazy'\n"
        "    unbiased = True\n"
        "    def surrogate(self, dist, f, noise, state):\n"
        "        return Surrogate(f(dist.sample(noise['sample'])))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("estimator", "gradbench.test-no-such-group")
    registry._loaded = True
    registry.add("lazy", "lazy_est_mod:Lazy", "plugin test")
    assert "lazy_est_mod" not in sys.modules
    assert registry.info("lazy").description == "Lazily loaded."
    assert registry.load("lazy").__name__ == "Lazy"
    registry.add("misnamed", "lazy_est_mod:Lazy", "plugin test")
    with pytest.raises(RegistryError, match="make the entry-point name match"):
        registry.load("misnamed")
    registry.add("missing", "no_such_module_xyz:Thing", "plugin test")
    with pytest.raises(RegistryError, match="cannot be loaded"):
        registry.load("missing")


def test_compatibility_from_declarations():
    bern = tasks.info("toy-bernoulli")
    assert compatibility(estimators.info("reinforce"), bern) == (True, "bernoulli")
    assert compatibility(estimators.info("stgs"), bern) == (True, "categorical")
    hard_only = dataclasses.replace(bern, capabilities={**bern.capabilities, "relaxed_f": False})
    ok, why = compatibility(estimators.info("gst"), hard_only, {"hard": False})
    assert not ok and "relaxed" in why
    assert compatibility(estimators.info("gst"), hard_only, {"hard": True})[0]
    assert not compatibility(estimators.info("gumbel-softmax"), hard_only)[0]


def test_catalog_json_is_plain_data():
    text = json.dumps(load_catalog())
    assert "gradbench.estimators.gst:GST" in text


def test_registry_names_are_not_shadowed_by_the_builtin_subpackages():
    """``gradbench.ESTIMATORS`` stays the registry once a built-in module has loaded (issue 11).

    Before, ``gradbench.estimators`` was advertised as the registry, but importing any
    built-in estimator bound the subpackage of the same name over it.
    """
    code = (
        "import gradbench\n"
        "from gradbench.registry import estimators, tasks\n"
        "gradbench.ESTIMATORS.build('gst')\n"
        "gradbench.TASKS.build('toy-quadratic')\n"
        "assert gradbench.ESTIMATORS is estimators and gradbench.TASKS is tasks\n"
        "assert 'gst' in gradbench.ESTIMATORS.names() and 'toy-quadratic' in gradbench.TASKS.names()\n"
        "import gradbench.estimators, gradbench.tasks\n"
        "assert gradbench.estimators.__name__ == 'gradbench.estimators'  # the subpackage, and only that\n"
        "assert gradbench.tasks.__name__ == 'gradbench.tasks'\n"
        "assert 'ESTIMATORS' in gradbench.__all__ and 'estimators' not in gradbench.__all__\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
