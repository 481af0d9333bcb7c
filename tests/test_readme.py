"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    install_and_run, install_and_test = blocks
    assert install_and_test in ci.splitlines()
    assert install_and_run.startswith("python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0")
    assert "gradbench run" in install_and_run
