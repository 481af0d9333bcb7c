"""The copy-paste CI of docs/ci.md, executed: a user's plugin estimator, a committed baseline, a regression caught.

The user's repository is a temporary folder holding the workflow's script as ci/variance-check.sh; the
user's package is the README's plugin (tests/test_plugin.py), installed into a folder on PYTHONPATH.
The install step is replaced by the current environment (GRADBENCH_INSTALL=no); everything else runs as
written, the GitHub step straight from examples/ci/gradient-variance.yml.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from test_plugin import MODULE, PYPROJECT

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "ci" / "variance-check.sh"
WORKFLOW = ROOT / "examples" / "ci" / "gradient-variance.yml"
# The regression: the same estimator (same name, version and parameters) with its baseline shifted far
# from f, so its variance grows several times over.
WORSE = MODULE.replace("(fx - self.b).detach()", "(fx - self.b + 3.0).detach()")


def install_plugin(site: Path, module: str, tmp: Path) -> None:
    pkg = tmp / "plugin-src"
    shutil.rmtree(pkg, ignore_errors=True)
    (pkg / "my_estimators").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "my_estimators" / "__init__.py").write_text("")
    (pkg / "my_estimators" / "baseline.py").write_text(textwrap.dedent(module))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--upgrade",
                    "--target", str(site), str(pkg)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("user")
    repo, site = tmp / "repo", tmp / "site"
    (repo / "ci").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "ci" / "variance-check.sh")
    install_plugin(site, MODULE, tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GRADBENCH_"))}
    env.update(PYTHONPATH=str(site), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               GRADBENCH_INSTALL="no", GRADBENCH_ESTIMATORS="reinforce-const(b=0.9)", GRADBENCH_SAMPLES="5000",
               TMPDIR=str(tmp))
    return repo, site, tmp, env


def script(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "ci/variance-check.sh", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)


def workflow_step(name: str) -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the workflow file (it comes with the ray extra)")
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["variance"]["steps"]
    return next(s for s in steps if s.get("name") == name)


def test_baseline_then_unchanged_then_regressed(user_repo):
    repo, site, tmp, env = user_repo
    made = script(repo, env, "--update")
    assert made.returncode == 0, made.stderr
    assert "baseline written to gradbench-baseline" in made.stdout
    assert len(list((repo / "gradbench-baseline").glob("*/metrics.parquet"))) == 1

    same = script(repo, dict(env, GRADBENCH_JUNIT="junit.xml"))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no metric changed beyond its noise" in same.stdout and "identical" in same.stdout
    assert ET.parse(repo / "junit.xml").getroot().find("testsuite").get("failures") == "0"

    install_plugin(site, WORSE, tmp)  # the user's change makes the estimator worse
    # The GitHub step exactly as the workflow writes it (the install step before it is replaced by this
    # environment), in a GitHub-like environment; only the estimator's name is the test's own.
    step = workflow_step("Variance regression check")
    summary = tmp / "summary.md"
    gh_env = {**env, **{k: str(v) for k, v in step["env"].items()}, "GITHUB_ACTIONS": "true",
              "GITHUB_STEP_SUMMARY": str(summary), "GRADBENCH_ESTIMATORS": "reinforce-const(b=0.9)"}
    worse = subprocess.run(["bash", "-c", step["run"]], cwd=repo, env=gh_env, capture_output=True, text=True,
                           timeout=600)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "regression" in worse.stdout
    errors = [line for line in worse.stdout.splitlines() if line.startswith("::error ")]
    who = "toy-quadratic · reinforce-const(b=0.9)"
    assert [e.split("::")[1] for e in errors] == [f"error title={who}%3A logits mse",
                                                  f"error title={who}%3A logits variance"]
    assert all(" regression: " in e and "× worse (baseline " in e for e in errors)
    failures = list(ET.parse(repo / step["env"]["GRADBENCH_JUNIT"]).getroot().iter("failure"))
    assert sorted(f.get("message").split(" regression")[0] for f in failures) == [f"{who}: logits mse",
                                                                                  f"{who}: logits variance"]
    assert "| regression |" in summary.read_text()


def test_the_workflow_installs_before_it_checks_and_names_the_script():
    install = workflow_step("Install CPU torch, gradbench and this package")
    assert "--index-url https://download.pytorch.org/whl/cpu" in install["run"]
    assert 'pip install "$GRADBENCH_SOURCE"' in install["run"]
    check = workflow_step("Variance regression check")
    assert check["run"] == "bash ci/variance-check.sh" and check["env"]["GRADBENCH_INSTALL"] == "no"


def test_a_missing_setting_is_one_line(user_repo):
    repo, _, _, env = user_repo
    env = {k: v for k, v in env.items() if k != "GRADBENCH_ESTIMATORS"}
    result = script(repo, env)
    assert result.returncode != 0 and "GRADBENCH_ESTIMATORS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
