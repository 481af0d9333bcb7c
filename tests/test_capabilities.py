"""Typed capabilities (gradbench.capabilities) and the automatic discovery of built-in modules."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from gradbench import capabilities
from gradbench.capabilities import FromParam, PerCategory
from gradbench.contract import Estimator, Surrogate
from gradbench.registry import BUILTIN_PACKAGES, EntryInfo, RegistryError, builtin_modules, estimators, load_catalog

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_file_is_found():
    """A built-in is one file: every .py under estimators/ and tasks/ is walked, none listed by hand."""
    for kind, folder in (("estimator", "estimators"), ("task", "tasks")):
        expected = set()
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if parts:  # the package itself is not a module of it
                expected.add(".".join((BUILTIN_PACKAGES[kind], *parts)))
        assert set(builtin_modules(kind)) == expected


def test_catalog_targets_come_from_found_modules():
    for kind, entries in load_catalog().items():
        found = set(builtin_modules(kind))
        assert all(e["target"].split(":")[0] in found for e in entries.values())


def test_typed_capabilities_round_trip_and_resolve():
    from gradbench.params import Param

    params = {"hard": Param("hard", "bool", True, ""), "m": Param("m", "int", 4, "")}
    for value in (FromParam("hard", negate=True), FromParam("m"), PerCategory(plus=1), PerCategory(2, 0), True, 3):
        assert capabilities.from_json(capabilities.to_json(value)) == value
    assert capabilities.resolve(FromParam("hard", negate=True), params) is False
    assert capabilities.resolve(FromParam("hard", negate=True), params, {"hard": False}) is True
    assert capabilities.resolve(FromParam("m"), params, {"m": 7}) == 7
    assert str(PerCategory(plus=1)) == "K·D + 1" and str(PerCategory(2)) == "2·K·D"
    assert PerCategory(plus=1).count(categories=3, variables=5) == 16


def test_catalog_stores_typed_capabilities_as_objects():
    caps = load_catalog()["estimator"]
    assert caps["gst"]["capabilities"]["relaxed_f"] == {"param": "hard", "negate": True}
    assert caps["indecater"]["capabilities"]["evaluations"] == {"per_category": 1, "plus": 1}
    assert caps["rloo"]["capabilities"]["evaluations"] == {"param": "m", "negate": False}
    assert estimators.info("nvil").capabilities["unbiased"] == FromParam("normalize", negate=True)
    assert estimators.info("nvil").capability("unbiased", {"normalize": True}) is False


def test_configured_estimator_resolves_its_capabilities():
    assert estimators.build("gst(hard=False)").capability("relaxed_f") is True
    assert estimators.build("gst").capability("relaxed_f") is False
    assert estimators.build("rloo(m=3)").n_evaluations() == 3
    with pytest.raises(TypeError, match="depend on the task"):
        estimators.build("indecater").n_evaluations()


@pytest.mark.parametrize("old, fix", [("!hard", "FromParam('hard', negate=True)"), ("hard", "FromParam('hard')")])
def test_old_string_capabilities_are_rejected_with_the_fix(old, fix):
    from gradbench.params import param

    @dataclass(frozen=True)
    class Old(Estimator):
        """Declares a capability the old way."""

        name = "old-style"
        unbiased = True
        relaxed_f = old
        hard: bool = param(True, "hard")

        def surrogate(self, dist, f, noise, state):
            return Surrogate(f(dist.sample(noise["sample"])))

    with pytest.raises(RegistryError, match=rf"old-style.*declare {fix.replace('(', '[(]').replace(')', '[)]')}"):
        EntryInfo.from_class(Old, "x:Old", "plugin test")


def test_estimators_page_is_current():
    """docs/estimators.md is made from the catalog (regenerate: gradbench regenerate --only catalog)."""
    from gradbench.regenerate import ESTIMATORS_PAGE, estimators_page

    assert ESTIMATORS_PAGE.read_text() == estimators_page(load_catalog()), (
        "docs/estimators.md is stale: run `gradbench regenerate --only catalog`")


def test_table_check_ignores_only_timing_columns():
    from gradbench.regenerate import mask_timings

    table = "| estimator | variance | µs / estimate |\n|---|---|---|\n| `a` | 1.0 | {t} |\ntext {t}\n"
    assert mask_timings(table.format(t="3.1")) == mask_timings(table.replace("| {t} |", "| 9 |").format(t="3.1"))
    assert mask_timings(table.format(t="3.1")) != mask_timings(table.replace("1.0", "2.0").format(t="3.1"))
    assert mask_timings(table.format(t="3.1")) != mask_timings(table.format(t="4.0"))  # outside a table: compared


def test_compatibility_reads_typed_evaluations():
    """On a decision sequence seen one decision at a time, only one evaluation per decision fits:
    IndeCateR's PerCategory count (K·D + 1) is refused, as a FromParam count other than 1 would be."""
    from gradbench.registry import compatibility, tasks

    ok, why = compatibility(estimators.info("indecater"), tasks.info("listops"))
    assert not ok and "K·D + 1 times per decision" in why and "(K·D + 1)^T" in why
