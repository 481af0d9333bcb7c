"""Battery of bad inputs and faults: every one must be handled as the README promises.

    python tests/benchmarks/bad_inputs.py [--jobs 3] [--verbose]

Each case runs ``gradbench`` (or a Python API snippet) in a fresh, empty folder with a tight
timeout and checks the promise for its kind:

error   exit 2, exactly one stderr line starting ``error:``, no traceback, nothing written
        (the case folder stays empty, no temporary file anywhere, the fixtures unchanged)
fault   a fault mid-run (full disk): exit 2, one ``error:`` line, no temporary or results file; a sidecar
        that was written says ``failed``
failed  a failed measurement: exit 1, no traceback, every row ``failed``, the sidecar ``failed``
signal  SIGTERM mid-run: exit 143, the sidecar ``interrupted`` (not ``running``)
umask   a good run: results files readable as the umask allows (0644 under 022), not 0600
api     a Python API call raises UserError (one line), never another exception

Prints each broken promise, then "N handled as promised out of M" and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

PY = sys.executable
TIMEOUT = 90  # seconds per case: every refusal must come long before any real compute


@dataclass
class Case:
    name: str
    argv: list[str]  # after "gradbench", or a Python snippet for kind "api"
    kind: str = "error"
    needle: str = ""  # must appear in the error line (e.g. "did you mean 'gst'")
    fsize: int | None = None  # RLIMIT_FSIZE in bytes (a full disk)
    stdout: str | None = None  # a path to send stdout to (/dev/full)
    allowed: tuple = ()  # names a case may leave (e.g. the --out folder it was asked to create)
    problems: list[str] = field(default_factory=list)


def cases(fx: Path) -> list[Case]:
    """Every case; ``fx`` holds the fixtures (good results, damaged results, files in the way)."""
    good, blocker = str(fx / "good"), str(fx / "blocker")
    run = ["run", "-t", "toy-quadratic", "--samples", "20"]
    out: list[Case] = []

    def err(name, *argv, needle="", **kw):
        out.append(Case(name, [str(a) for a in argv], "error", needle, **kw))

    # -- run: names and did-you-mean ------------------------------------------------------------
    for typo, meant in (("gtss", "gst"), ("gsst", "gst"), ("sgt", "gst"), ("rienforce", "reinforce"),
                        ("reinforcee", "reinforce"), ("vimoc", "vimco"), ("rlo", "rloo"), ("stsg", "stgs"),
                        ("GST", "gst"), ("relax-", "relax")):
        err(f"run estimator typo {typo}", *run, "-e", typo, needle=f"did you mean '{meant}'")
    for typo, meant in (("toy-quadratci", "toy-quadratic"), ("poison", "poisson"), ("binomail", "binomial"),
                        ("toy-bernouli", "toy-bernoulli"), ("toylatent", "toy-latent")):
        err(f"run task typo {typo}", "run", "-t", typo, "-e", "reinforce", needle=f"did you mean '{meant}'")
    err("run unknown estimator", *run, "-e", "xyzzy", needle="unknown estimator")
    # -- run: malformed specs -------------------------------------------------------------------
    for spec in ("gst(", "gst)", "gst(tau=)", "gst(tau=0.5", "gst(0.5)", "gst(tau=0.5, tau=1)", "gst(**{})",
                 "gst(tau=__import__('os'))", "gst(tau=1+)", "gst[tau=1]", "(gst)", "9gst", "gst(tau=0.5)(gap=2)",
                 "gst()()", "gst(tau=0.5).x", "gst(tau=lambda: 1)", "gst(tau={1: 2})", "gst(tau=0.5) extra",
                 "", " ", "gst(tau=" + "+".join(["1"] * 50_000) + ")", "gst(tau=" + "+".join(["1"] * 3000) + ")",
                 "gst(tau=" + "[" * 400 + "]" * 400 + ")", "gst(tau=" + "(" * 300 + "1" + ")" * 300 + ")",
                 "gst(tau=" + "1" * 20000 + ")"):
        err(f"run spec {spec[:30]!r}", *run, "-e", spec)
    # -- run: values, types, ranges -------------------------------------------------------------
    for spec in ("gst(tau=-1)", "gst(tau=0)", "gst(tau='x')", "gst(tau=nan)", "gst(tau=float('inf'))",
                 "gst(tau=1e999)", "gst(tau=True)", "gst(tau=None)", "gst(tau=[1, 2])", "gst(gap='q')",
                 "gst(hard=1)", "gst(nope=1)", "rloo(m=1)", "rloo(m=2.5)", "rloo(m=-3)", "vimco(m=1)",
                 "gr-mc(k=0)", "gr-mc(k=1.5)", "gr-mc(k=1000000000000)", "stgs(tau=-0.1)"):
        err(f"run estimator value {spec}", *run, "-e", spec)
    for task in ("toy-quadratic(logits=[])", "toy-quadratic(logits='a')", "toy-quadratic(target=[1, 2, 3])",
                 "toy-quadratic(nope=1)", "toy-bernoulli(dim=0)", "toy-bernoulli(dim=-1)", "toy-bernoulli(dim=1.5)",
                 "poisson(rate=[-1.0])", "poisson(rate=[0.0])", "binomial(total_count=0)",
                 "binomial(total_count=1000000000)", "toy-quadratic(logits=[1e39, 0.0], target=[0.1, 0.2])"):
        err(f"run task value {task[:40]}", "run", "-t", task, "-e", "reinforce", "--samples", "20",
            "--dtype", "float32")
    # -- run: options ---------------------------------------------------------------------------
    for option, value in (("--samples", "1"), ("--samples", "0"), ("--samples", "-5"), ("--samples", "abc"),
                          ("--samples", "1e3"), ("--samples", "1000000000000"), ("--seed", "-1"),
                          ("--seed", str(2**63)), ("--seed", "x"), ("--engine", "fast"), ("--device", "tpu"),
                          ("--device", "cuda"), ("--dtype", "float16"), ("--reference", "magic"),
                          ("--reference-samples", "10"), ("--reference-samples", "1000000000000"),
                          ("--chunk-size", "0"), ("--warmup", "-1"), ("--warmup", "1000000000000"),
                          ("--bogus", "1")):
        err(f"run {option} {value}", *run, "-e", "reinforce", option, value)
    err("run no task", "run", "-e", "reinforce", needle="--task")
    err("run no estimator", "run", "-t", "toy-quadratic", needle="--estimator")
    err("run unknown suite", "run", "--suite", "nope")
    err("run suite and task", "run", "--suite", "ci", "-t", "toy-quadratic")
    err("run suite file missing", "run", "--suite", "ci", "--suite-file", "missing.toml")
    err("run duplicate", *run, "-e", "reinforce", "-e", "reinforce", needle="once")
    err("run resolved duplicate", *run, "-e", "stgs", "-e", "stgs(tau=1.0)", needle="once")
    err("run resolved duplicate 2", *run, "-e", "gst(tau=0.5)", "-e", "gst(tau=0.5, gap=1.0)", needle="once")
    err("run incompatible", "run", "-t", "toy-latent", "-e", "vimco(m=20)", "-e", "reinforce", "--samples", "20")
    err("run out is a file", *run, "-e", "reinforce", "--out", blocker)
    err("run out under a file", *run, "-e", "reinforce", "--out", f"{blocker}/x")
    err("run full disk (sidecar)", *run, "-e", "reinforce", "--out", "r", fsize=512, allowed=("r",))
    out.append(Case("run full disk (metrics)", [*run, "-e", "reinforce", "--out", "r"], "fault", fsize=4096))
    overflow = ["run", "-t", "toy-quadratic(logits=[0.0, 0.0], target=[1e100, 0.0])", "--dtype", "float64"]
    out.append(Case("run measurement overflows", [*overflow, "-e", "reinforce", "--samples", "20", "--out", "r"],
                    "failed", allowed=("r",)))
    out.append(Case("run measurement overflows (2 estimators)", [*overflow, "-e", "reinforce", "-e", "reinforce-ema",
                    "--samples", "20", "--out", "r"], "failed", allowed=("r",)))
    err("run extreme count rate", "run", "-t", "poisson(rate=[1e300])", "-e", "reinforce", needle="tables of")
    err("run extreme count probability", "run", "-t", "geometric(probs=[1e-300])", "-e", "reinforce", needle="tables of")
    out.append(Case("run SIGTERM", ["run", "-t", "toy-bernoulli(dim=50)", "-e", "reinforce", "--samples",
                                    "100000000", "--chunk-size", "64", "--out", "r"], "signal", allowed=("r",)))
    out.append(Case("run umask", ["run", "-t", "toy-quadratic", "-e", "reinforce", "--samples", "20", "--out", "r"],
                    "umask", allowed=("r",)))
    # -- sweep ----------------------------------------------------------------------------------
    sweep = ["sweep", "-t", "toy-quadratic", "-e", "reinforce", "--samples", "20"]
    for seed in (str(2**63), "-1", "x", "0..x", "5..1", "0..100000000", f"0..{2**63}", "1.5"):
        err(f"sweep --seed {seed}", *sweep, "--seed", seed, "--dry-run")
    for option, value in (("--jobs", "0"), ("--jobs", "1000000000"), ("--threads", "0"), ("--gpus-per-cell", "0"),
                          ("--gpus-per-cell", "inf"), ("--gpus-per-cell", "nan"), ("--backend", "slurm"),
                          ("--address", "auto"), ("--samples", "1"), ("--engine", "fast"),
                          ("--estimator-grid", "tau=[0.5"), ("--estimator-grid", "nope=[1]"),
                          ("--task-grid", "dim=[1, 2]"), ("--estimator-grid", "tau=[-1.0]"),
                          ("--suite-file", "missing.toml")):
        err(f"sweep {option} {value}", *sweep, option, value, "--dry-run")
    err("sweep too many cells", *sweep, "--estimator-grid", f"m={list(range(2, 400))}", "--seed", "0..999",
        "--dry-run", needle="cells")
    err("sweep unknown suite", "sweep", "--suite", "nope", "--dry-run")
    err("sweep estimator typo", "sweep", "-t", "toy-quadratic", "-e", "gtss", "--dry-run", needle="did you mean")
    err("sweep no task", "sweep", "-e", "reinforce")
    err("sweep chained spec", "sweep", "-t", "toy-quadratic", "-e", "gst(tau=0.5)(gap=2)", "--dry-run")
    err("sweep deep spec", "sweep", "-t", "toy-quadratic", "-e", "gst(tau=" + "[" * 100 + "]" * 100 + ")",
        "--dry-run")
    # -- report ---------------------------------------------------------------------------------
    for name in ("foreign", "missing-column", "wrong-type", "wrong-int", "corrupt", "empty", "all-failed"):
        err(f"report {name}", "report", str(fx / name))
        if name != "all-failed":  # comparing against all-failed results is legitimate: "now failing", exit 1
            err(f"compare {name} vs good", "compare", good, str(fx / name))
    err("report missing path", "report", "nowhere")
    err("report not parquet", "report", blocker)
    err("report out under a file", "report", good, "--out", f"{blocker}/rep")
    err("compare missing path", "compare", good, "nowhere")
    # -- compare options ------------------------------------------------------------------------
    for option, value in (("--max-ratio", "nan"), ("--max-ratio", "inf"), ("--max-ratio", "0.5"),
                          ("--max-ratio", "-1"), ("--max-ratio", "x"), ("--alpha", "0"), ("--alpha", "1"),
                          ("--alpha", "nan"), ("--alpha", "2"), ("--timing-ratio", "nan"), ("--timing-ratio", "0.5"),
                          ("--timing-ratio", "inf"), ("--csv", "missing/c.csv"), ("--csv", f"{blocker}/c.csv"),
                          ("--metric", "")):
        err(f"compare {option} {value}", "compare", good, good, option, value)
    err("compare csv full disk", "compare", good, good, "--csv", "c.csv", fsize=512)
    # -- list -----------------------------------------------------------------------------------
    err("list typo", "list", "estimatorz", needle="did you mean 'estimators'")
    err("list typo 2", "list", "tsaks", needle="did you mean 'tasks'")
    err("list unknown", "list", "things")
    err("list extra argument", "list", "tasks", "more")
    err("list stdout full", "list", stdout="/dev/full")
    err("list --version stdout full", "--version", stdout="/dev/full")
    err("unknown command", "frobnicate")
    # -- data listops ---------------------------------------------------------------------------
    data = ["data", "listops"]
    err("data nothing", *data)
    err("data both", *data, "--out", "d.tsv", "--check", "d.tsv")
    for option, value in (("--n", "0"), ("--n", "-1"), ("--n", "1000000000000"), ("--max-args", "1"),
                          ("--max-depth", "0"), ("--max-depth", "1000000"), ("--branching-prob", "-0.1"),
                          ("--branching-prob", "nan"), ("--branching-prob", "2"), ("--min-length", "0"),
                          ("--max-length", "2"), ("--seed", "x")):
        err(f"data {option} {value}", *data, "--out", "d.tsv", option, value)
    err("data min above max", *data, "--out", "d.tsv", "--min-length", "50", "--max-length", "10")
    err("data out under a file", *data, "--out", f"{blocker}/d.tsv", "--n", "5")
    err("data full disk", *data, "--out", "d.tsv", "--n", "3000", fsize=1024)
    err("data check missing", *data, "--check", "missing.tsv")
    err("data check garbage", *data, "--check", str(fx / "garbage.tsv"))
    # -- Python API -----------------------------------------------------------------------------
    for snippet in (
        "from gradbench import parse_spec; parse_spec('gst(tau=0.5)(gap=2)')",
        "from gradbench import parse_spec; parse_spec('gst(tau=' + '+'.join(['1'] * 50000) + ')')",
        "from gradbench import parse_spec; parse_spec('gst(tau=' + '[' * 500 + ']' * 500 + ')')",
        "from gradbench.registry import estimators; estimators.build('gtss')",
        "from gradbench.registry import estimators; estimators.build('gst(tau=-1)')",
        "from gradbench.registry import estimators; estimators.build('gr-mc(k=0)')",
        "from gradbench.registry import tasks; tasks.build('toy-bernoulli(dim=0)')",
        "from gradbench.registry import tasks; tasks.build('poison')",
        f"from gradbench import read_results; read_results({str(fx / 'foreign')!r})",
        f"from gradbench import read_results; read_results({str(fx / 'wrong-type')!r})",
        "from gradbench import read_results; read_results('nowhere')",
        "from gradbench.run import RunOptions; RunOptions(seed=2**63).check()",
        "from gradbench.run import RunOptions; RunOptions(samples=10**12).check()",
        "from gradbench.run import RunOptions, prepare; prepare('toy-quadratic', ['stgs', 'stgs(tau=1.0)'], RunOptions())",
        "from gradbench.run import RunOptions, prepare, execute; execute(prepare('toy-quadratic', ['gr-mc(k=10**12)'.replace('10**12', '1000000000000')], RunOptions(out='r')))",
        "from gradbench.run import RunOptions, prepare, execute; execute(prepare('toy-latent', ['reinforce', 'vimco(m=20)'], RunOptions(out='r', samples=20)))",
        f"from gradbench.reports.compare import compare; from gradbench import read_results; d = read_results({good!r}); compare(d, d, max_ratio=float('nan'))",
        "import torch; from gradbench import measure, MeasureConfig; from gradbench.registry import tasks, estimators; "
        "measure(tasks.build('toy-quadratic').problem(torch.device('cpu'), torch.float64), "
        "estimators.build('gr-mc(k=1000000000000)'), None, MeasureConfig(samples=10))",
    ):
        out.append(Case(f"api {snippet[:60]}", [snippet], "api"))
    return out


# -- fixtures -----------------------------------------------------------------------------------

def make_fixtures(fx: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    subprocess.run([PY, "-m", "gradbench", "run", "-t", "toy-quadratic", "-e", "reinforce", "-e", "gst",
                    "--samples", "50", "--out", str(fx / "good")], check=True, capture_output=True, timeout=300)
    table = pq.read_table(next((fx / "good").rglob("metrics.parquet")))

    def put(name: str, data: pa.Table | bytes | None) -> None:
        folder = fx / name / "run"
        folder.mkdir(parents=True)
        if isinstance(data, bytes):
            (folder / "metrics.parquet").write_bytes(data)
        elif data is not None:
            pq.write_table(data, folder / "metrics.parquet")

    col = table.schema.get_field_index
    put("foreign", pa.table({"a": [1, 2], "b": ["x", "y"]}))
    put("missing-column", table.drop(["estimator"]))
    put("wrong-type", table.set_column(col("value"), "value", pa.array(["x"] * len(table))))
    put("wrong-int", table.set_column(col("step"), "step", pa.array([0.5] * len(table))))
    put("corrupt", b"PAR1 this is not parquet")
    put("empty", None)
    failed = table.set_column(col("status"), "status", pa.array(["failed"] * len(table)))
    put("all-failed", failed)
    (fx / "blocker").write_text("a file where a folder is expected")
    (fx / "garbage.tsv").write_text("not\ta listops line\n((((\n")


def snapshot(path: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in path.rglob("*")}


# -- running and checking -------------------------------------------------------------------------

def run_case(case: Case, root: Path) -> Case:
    where = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "GRADBENCH_DEBUG": ""}
    env.pop("GRADBENCH_DEBUG")

    def limits():
        os.umask(0o022)
        if case.fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))

    if case.kind == "api":
        code = ("import sys\nfrom gradbench.errors import UserError\ntry:\n"
                + "".join(f"    {line}\n" for line in case.argv[0].split("\n"))
                + "except UserError as exc:\n    print('error:', exc, file=sys.stderr); sys.exit(2)\n"
                + "print('no error raised', file=sys.stderr); sys.exit(0)\n")
        argv = [PY, "-c", code]
    else:
        argv = [PY, "-m", "gradbench", *case.argv]
    stdout = open(case.stdout, "w") if case.stdout else subprocess.PIPE
    try:
        proc = subprocess.Popen(argv, cwd=where, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                preexec_fn=limits)
        if case.kind == "signal":
            deadline = time.time() + 60
            while time.time() < deadline and not list(where.rglob("_run.json")) and proc.poll() is None:
                time.sleep(0.2)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            case.problems.append(f"no answer within {TIMEOUT} s")
    finally:
        if case.stdout:
            stdout.close()
    out = out or ""
    check(case, proc.returncode, out, err, where)
    shutil.rmtree(where, ignore_errors=True)
    return case


def check(case: Case, code: int, out: str, err: str, where: Path) -> None:
    p = case.problems
    if "Traceback" in out + err or "Exception ignored" in err:
        p.append("traceback: " + (err.strip().splitlines() or [""])[-1][:200])
    temporary = [x for x in where.rglob("*") if x.name.endswith(".tmp") or x.name.startswith(".")]
    if temporary:
        p.append(f"temporary files left: {temporary[:3]}")
    lines = [line for line in err.splitlines() if line.strip()]
    if case.kind in ("error", "api"):
        if code != 2:
            p.append(f"exit {code}, expected 2")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            p.append(f"stderr is not one 'error:' line: {err.strip()[:300]!r}")
        elif case.needle and case.needle not in lines[0]:
            p.append(f"error line lacks {case.needle!r}: {lines[0][:200]}")
        left = [x for x in where.rglob("*") if x.relative_to(where).parts[0] not in case.allowed or x.is_file()]
        if left:
            p.append(f"wrote {[str(x.relative_to(where)) for x in left][:3]}")
        return
    results = where / "r"
    sidecars = [json.loads(s.read_text()) for s in results.rglob("_run.json")]
    if case.kind == "fault":
        if code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
            p.append(f"exit {code}, stderr {err.strip()[:200]!r}: expected exit 2 and one 'error:' line")
        if list(results.rglob("metrics.parquet")):
            p.append("a results file was left")
        if any(s["status"] != "failed" for s in sidecars):
            p.append(f"sidecar status {[s['status'] for s in sidecars]}, expected failed")
    elif case.kind == "failed":
        import pandas as pd

        if code != 1:
            p.append(f"exit {code}, expected 1 (a failed measurement)")
        rows = pd.read_parquet(results) if sidecars else None
        if rows is None or not (rows["status"] == "failed").all():
            p.append("a row of a failed measurement says ok")
        if [s["status"] for s in sidecars] != ["failed"]:
            p.append(f"sidecar status {[s['status'] for s in sidecars]}, expected failed")
    elif case.kind == "signal":
        if code != 143:
            p.append(f"exit {code}, expected 143")
        if [s["status"] for s in sidecars] != ["interrupted"]:
            p.append(f"sidecar status {[s['status'] for s in sidecars]}, expected interrupted")
    elif case.kind == "umask":
        if code != 0:
            p.append(f"exit {code}: {err.strip()[-200:]}")
        for name in ("metrics.parquet", "_run.json"):
            modes = {oct(x.stat().st_mode & 0o777) for x in results.rglob(name)}
            if modes != {"0o644"}:
                p.append(f"{name} has mode {modes}, expected 0o644 under umask 022")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="gradbench-battery-"))
    try:
        fx = root / "fixtures"
        fx.mkdir()
        make_fixtures(fx)
        before = snapshot(fx)
        todo = [c for c in cases(fx) if args.k in c.name]
        with ThreadPoolExecutor(args.jobs) as pool:
            done = list(pool.map(lambda c: run_case(c, root), todo))
        if snapshot(fx) != before:
            done.append(Case("fixtures unchanged", [], problems=["a case changed or added files in the fixtures"]))
        bad = [c for c in done if c.problems]
        for case in done if args.verbose else bad:
            print(f"{'BROKEN' if case.problems else 'ok    '} {case.name}: {'; '.join(case.problems)}")
        print(f"{len(done) - len(bad)} handled as promised out of {len(done)} "
              f"(wall time {time.perf_counter() - started:.0f} s, {args.jobs} at a time)")
        return 1 if bad else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
