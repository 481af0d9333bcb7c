"""A third-party estimator, in its own package, found through the entry-point group.

This is exactly what the README shows: write the class, declare the entry point,
install the package, run it with `gradbench run`, with no change to gradbench.
"""

import os
import subprocess
import sys
import textwrap

import pandas as pd

PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "my-estimators"
version = "0.1.0"

[project.entry-points."gradbench.estimators"]
reinforce-const = "my_estimators.baseline:ReinforceConst"
"""

MODULE = '''
"""REINFORCE with a fixed constant baseline b."""
from dataclasses import dataclass

from gradbench import Estimator, Surrogate, param


@dataclass(frozen=True)
class ReinforceConst(Estimator):
    """REINFORCE with a constant baseline: (f(x) - b) grad log p(x)."""

    name = "reinforce-const"
    unbiased = True
    families = ("*",)
    b: float = param(0.0, "the constant baseline")

    def surrogate(self, dist, f, noise, state):
        x = dist.sample(noise["sample"])
        fx, logp = f(x), dist.log_prob_units(x)
        value = fx + (fx - self.b).detach() * (logp - logp.detach())
        return Surrogate(value.reshape(value.shape[0], -1).sum(1))
'''


def test_plugin_estimator_runs_through_the_entry_point(tmp_path):
    pkg = tmp_path / "plugin"
    (pkg / "my_estimators").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "my_estimators" / "__init__.py").write_text("")
    (pkg / "my_estimators" / "baseline.py").write_text(textwrap.dedent(MODULE))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(pkg)], check=True)
    env = dict(os.environ, PYTHONPATH=str(site))
    listed = subprocess.run([sys.executable, "-m", "gradbench", "list", "estimators"], env=env,
                            capture_output=True, text=True, check=True)
    assert "reinforce-const" in listed.stdout and "the constant" not in listed.stderr
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "gradbench", "run", "--task", "toy-quadratic",
                          "-e", "reinforce", "-e", "reinforce-const(b=0.9)", "--samples", "20000",
                          "--out", str(out)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    df = pd.read_parquet(out)
    variance = df[df.metric == "variance"].set_index("estimator_label")["value"]
    # f is about 1 here, so b = 0.9 removes most of REINFORCE's variance.
    assert variance["reinforce-const(b=0.9)"] < 0.2 * variance["reinforce"]
    bad = subprocess.run([sys.executable, "-m", "gradbench", "run", "--task", "toy-quadratic",
                          "-e", "reinforce-const(c=1)"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown parameter 'c'" in bad.stderr
