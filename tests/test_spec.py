"""Spec parsing: NAME or NAME(key=value, ...), read with ast, never eval."""

import pytest

from gradbench.errors import SpecError
from gradbench.params import Param
from gradbench.spec import parse_spec


def test_plain_name():
    assert parse_spec("gst").name == "gst"
    assert parse_spec("  toy-quadratic ").kwargs == {}


def test_keyword_literals():
    spec = parse_spec("toy-quadratic(logits=[0.5, -0.3, 0.1], target=[0.2, 0.3, 0.5], mask=None)")
    assert spec.name == "toy-quadratic"
    assert spec.kwargs == {"logits": [0.5, -0.3, 0.1], "target": [0.2, 0.3, 0.5], "mask": None}
    assert parse_spec("gst(gap='p', hard=False)").kwargs == {"gap": "p", "hard": False}


def test_str_round_trips():
    spec = parse_spec("gst(gap=1.2, tau=0.5)")
    assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize("text, fragment", [
    ("gst(1.2)", "must be named"),
    ("gst(gap=1.2", "cannot read"),
    ("gst(gap=__import__('os'))", "not a literal"),
    ("gst(gap=1, gap=2)", "given twice"),
    ("gst(**{'a': 1})", "not allowed"),
    ("(gap=1)", "expected NAME"),
    ("gst[gap=1]", "expected NAME(key=value"),
    ("gst(gap=float('inf'))", "not a literal"),
])
def test_malformed_specs_are_rejected(text, fragment):
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(")):
        parse_spec(text)


def test_param_validation_messages():
    tau = Param("tau", "float", 1.0, "temperature", gt=0.0)
    assert tau.validate("gst", 2) == 2.0 and isinstance(tau.validate("gst", 2), float)
    with pytest.raises(SpecError, match=r"gst: tau must be > 0, got 0"):
        tau.validate("gst", 0)
    with pytest.raises(SpecError, match="must be a number"):
        tau.validate("gst", "hot")
    with pytest.raises(SpecError, match="must be a number"):
        tau.validate("gst", True)
    with pytest.raises(SpecError, match="finite"):
        tau.validate("gst", 1e999)
    gap = Param("gap", "float", 1.0, "gap", ge=0.0, choices=("p",))
    assert gap.validate("gst", "p") == "p"
    with pytest.raises(SpecError, match=r"≥ 0 or 'p'"):
        gap.validate("gst", -1.0)
    k = Param("k", "int", 10, "draws", ge=1)
    assert k.validate("gr-mc", 3.0) == 3
    with pytest.raises(SpecError, match="integer"):
        k.validate("gr-mc", 2.5)
    floats = Param("logits", "floats", (0.0,), "logits", min_len=2)
    assert floats.validate("t", [1, 2]) == [1.0, 2.0]
    with pytest.raises(SpecError, match=r"logits\[1\] must be finite"):
        floats.validate("t", [0.0, float("nan")])
    with pytest.raises(SpecError, match="at least 2"):
        floats.validate("t", [0.0])
