"""The Python API example (docs/python-api.md, linked from the README) runs as a script and prints what it says."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def printed_table(text: str) -> dict[str, tuple[float, float]]:
    """estimator label -> (bias_norm, variance) from the printed pivot table."""
    rows = re.findall(r"^(\S+)\s+([-\d.e+]+)\s+([-\d.e+]+)\s*$", text, re.M)
    return {label: (float(bias), float(variance)) for label, bias, variance in rows}


def test_python_api_example_runs_as_a_script_and_prints_the_documented_numbers(tmp_path):
    page = PAGE.read_text()
    code, shown = re.search(r"```python\n(.*?)```\n\nprints[^\n]*\n\n```text\n(.*?)```", page, re.S).groups()
    script = tmp_path / "example.py"
    script.write_text(code)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got, documented = printed_table(run.stdout), printed_table(shown)
    assert set(got) == set(documented) == {"gst(gap=1.2)", "reinforce", "rloo"}
    for label, numbers in documented.items():  # seeded: the same numbers on every run (printed to 6 digits)
        assert got[label] == pytest.approx(numbers, rel=1e-5, abs=1e-6), label
    # What the page says of them: the unbiased estimators' bias is within the noise of 10,000 estimates
    # (3 standard errors of the mean: √(variance/S) bounds the noise of ‖mean − g‖ per coordinate sum).
    for label in ("reinforce", "rloo"):
        bias, variance = got[label]
        assert bias < 3 * (variance / 10_000) ** 0.5, label
    bias, variance = got["gst(gap=1.2)"]  # GST: a bias well above its noise, a variance below REINFORCE's
    assert bias > 3 * (variance / 10_000) ** 0.5 and variance < got["reinforce"][1]
