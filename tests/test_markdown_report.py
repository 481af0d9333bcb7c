"""Markdown variance tables from stored results, and the generated estimator table (docs/results/toy-estimators.md)."""

import re
from pathlib import Path

import pandas as pd

from gradbench.reports.markdown import variance_table
from gradbench.run import RunOptions, execute, prepare

ROOT = Path(__file__).resolve().parents[1]


def test_variance_table_from_a_run(tmp_path):
    plan = prepare("toy-quadratic", ["reinforce", "rloo", "reinforce-ema"], RunOptions(samples=500, warmup=10,
                                                                                   out=str(tmp_path), device="cpu"))
    frame = pd.read_parquet(execute(plan).run_dir)
    lines = variance_table(frame).splitlines()
    assert lines[0].startswith("| estimator | variance | variance × s |") and "variance ÷ reinforce" in lines[0]
    rows = {line.split("|")[1].strip(" `"): line.split("|") for line in lines[2:]}
    assert set(rows) == {"reinforce", "rloo", "reinforce-ema"}
    variances = [float(line.split("|")[2].split("±")[0]) for line in lines[2:]]
    assert variances == sorted(variances)  # lowest variance first
    assert rows["reinforce"][-3].strip() == "1" and rows["reinforce-ema"][-2].strip() == "10"


def test_results_table_is_generated_and_covers_every_fitting_estimator():
    from gradbench.registry import compatibility, estimators, tasks

    page = (ROOT / "docs" / "results" / "toy-estimators.md").read_text()
    block = page.split("<!-- ESTIMATOR-TABLE:BEGIN -->")[1].split("<!-- ESTIMATOR-TABLE:END -->")[0]
    assert "python tests/benchmarks/estimator_table.py --readme docs/results/toy-estimators.md" in block
    for task in ("toy-bernoulli", "toy-quadratic"):
        table = block.split(f"**`{task}`**")[1].split("**`")[0]
        listed = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))
        fitting = {e for e in estimators.names() if compatibility(estimators.info(e), tasks.info(task))[0]}
        assert listed == fitting, f"regenerate docs/results/toy-estimators.md: {sorted(listed ^ fitting)}"
