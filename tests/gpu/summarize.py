"""The summary.md of a tests/gpu/check.sh work folder: steps and times, the figures, the test result.

    python tests/gpu/summarize.py WORK_FOLDER MODE

Reads what the check wrote (timings.tsv, the headline run's Parquet, the benchmarks'
JSON, the comparisons' JSON, junit.xml) and prints Markdown. A missing piece is reported
as missing, never filled in.
"""

from __future__ import annotations

import csv
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps(work: Path) -> list[str]:
    rows = list(csv.DictReader((work / "timings.tsv").open(), delimiter="\t"))
    out = ["| step | status | seconds | limit (s) |", "| --- | --- | ---: | ---: |"]
    out += [f"| {r['step']} | {r['status']} | {r['seconds']} | {r['limit_s']} |" for r in rows]
    return out


def headline(work: Path) -> list[str]:
    folder = work / "headline"
    try:
        import pandas as pd

        df = pd.read_parquet(folder)
    except Exception as error:  # noqa: BLE001 - any failure to read is reported as such
        return [f"headline: no readable results ({type(error).__name__}: {error})"]
    run = next(folder.glob("*/_run.json"), None)
    meta = _json(run) if run else None
    env = (meta or {}).get("environment", {})
    out = [f"headline run: {len(df)} rows, status {sorted(set(df['status']))}, device {env.get('device_name', '?')}, "
           f"torch {env.get('torch', '?')}"]
    last = df[(df["param_group"] == "") & df["metric"].isin(["test/neg_elbo", "test/iwae_1000"])]
    if len(last):
        final = last[last["step"] == last["step"].max()]
        out.append("final " + ", ".join(f"{m} {v:.2f}" for m, v in zip(final["metric"], final["value"])))
    grads = df[(df["param_group"] == "encoder") & (df["metric"] == "variance_per_element")]
    if len(grads):
        out.append("encoder variance per element by step: "
                   + ", ".join(f"{int(s)}: {v:.3g}" for s, v in zip(grads["step"], grads["value"])))
    return out


def vae_speed(work: Path) -> list[str]:
    out = ["| B | S | engine | ms per estimate | peak MB | extra MB |", "| ---: | ---: | --- | ---: | ---: | ---: |"]
    for b in (1000, 100):
        fig = _json(work / f"vae_speed_B{b}.json")
        if fig is None:
            out.append(f"| {b} | – | missing | – | – | – |")
            continue
        for r in fig["runs"]:
            out.append(f"| {b} | {r['samples']} | {r['engine']} | {r['ms_per_estimate']:.2f} | {r['peak_mb']:.0f} | "
                       f"{r['extra_mb']:.0f} |")
        out.append(f"| {b} | – | floor (decoder fwd+bwd) | {fig['floor_ms_per_draw']:.2f} | | |")
    return out


def runner_speed(work: Path) -> list[str]:
    fig = _json(work / "runner_speed.json")
    if fig is None:
        return ["runner speed: missing"]
    out = [f"runner ({fig['estimator']} on {fig['task']}): vectorised {fig['vectorized_per_s']:,.0f} estimates/s "
           f"(S = {fig['samples']:,}), loop {fig['loop_per_s']:,.0f}/s (S = {fig['loop_samples']:,}), "
           f"{fig['vectorized_per_s'] / fig['loop_per_s']:,.0f}×"]
    for s, m in fig["memory"].items():
        gpu = "" if m.get("gpu_mb") is None else f", GPU peak {m['gpu_mb']:,.0f} MB"
        out.append(f"- S = {int(s):,}: peak RSS {m['rss_mb']:,.0f} MB{gpu}")
    return out


def comparisons(work: Path) -> list[str]:
    out = []
    for name in ("compare_same_device", "compare_cpu_device"):
        c = _json(work / f"{name}.json")
        if c is None:
            out.append(f"- {name}: missing")
            continue
        out.append(f"- {c['label']}: {c['identical']} of {c['values']} non-timing values bit-identical; max relative "
                   f"difference of the rest {c['max_relative_difference']:.3g} (median "
                   f"{c['median_relative_difference']:.3g})")
    return out


def tests(work: Path) -> list[str]:
    try:
        root = ET.parse(work / "junit.xml").getroot()
    except (OSError, ET.ParseError):
        return ["test suite: no junit.xml (killed before the end? see pytest.log)"]
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    a = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = a["tests"] - a["failures"] - a["errors"] - a["skipped"]
    out = [f"test suite: {passed} passed, {a['failures']} failed, {a['errors']} errors, {a['skipped']} skipped "
           f"in {float(suite.get('time', 0)):.0f} s"]
    for case in suite.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            message = (bad.get("message") or "").splitlines()[0][:200] if bad.get("message") else ""
            out.append(f"- FAILED {case.get('classname')}::{case.get('name')}: {message}")
    return out


def main() -> None:
    work, mode = Path(sys.argv[1]), sys.argv[2]
    title = "CUDA check" if mode == "gpu" else "CPU dry run of the CUDA check (reduced sizes)"
    parts = [f"# {title}", "", *steps(work), "", "## Headline", "", *headline(work), "",
             "## VAE measurement speed", "", *vae_speed(work), "", "## Runner speed", "", *runner_speed(work), "",
             "## Same seed, same numbers?", "", *comparisons(work), "", "## Tests", "", *tests(work), ""]
    print("\n".join(parts))


if __name__ == "__main__":
    main()
