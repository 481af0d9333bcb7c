"""gradbench report: the data behind each figure, the summary tables, the HTML page (also in a real browser)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from gradbench import store
from gradbench.cli import app
from gradbench.reports import figures as F
from gradbench.reports import tables as T

from rows import estimator_fields, frame, row
from toy_training import ToyTraining, write_training_run

runner = CliRunner()
T2 = float(stats.t.ppf(0.975, 2))


def fixed_rows():
    """Two tasks; gst measured with seeds 0 and 1; stgs as a τ sweep; one failed measurement."""
    rows = []
    for seed, value in ((0, 1.0), (1, 1.2)):
        rows += [row("variance", value, se=0.1, seed=seed, run_id=f"g{seed}", **estimator_fields("gst")),
                 row("bias_norm", 0.2, se=0.01, seed=seed, run_id=f"g{seed}", **estimator_fields("gst")),
                 row("bias_noise_floor", 0.01, seed=seed, run_id=f"g{seed}", **estimator_fields("gst"))]
    for tau, value in ((0.5, 3.0), (1.0, 2.0), (2.0, 0.5)):
        label = "stgs" if tau == 1.0 else f"stgs(tau={tau})"
        fields = estimator_fields(label, tau=tau)
        rows += [row("variance", value, se=0.05 * value, run_id="s", **fields),
                 row("bias_norm", 0.1 * tau, se=0.01, run_id="s", **fields),
                 row("bias_noise_floor", 0.01, run_id="s", **fields)]
    rows.append(row("variance", 9.0, se=0.1, task="toy-bernoulli", task_params="{}", run_id="b",
                    **estimator_fields("rloo")))
    rows.append(row("failed", np.nan, status="failed", run_id="b", **estimator_fields("reinforce")))
    return rows


def training_rows():
    """A training task: curves at steps 0..2 over three seeds, variance per element at steps 0 and 2."""
    rows = []
    for seed in range(3):
        for label, tau in (("gst", 1.0), ("gst(tau=0.5)", 0.5)):
            fields = dict(estimator_fields(label, tau=tau), task="mnist-vae", task_params="{}", seed=seed,
                          run_id=f"v{seed}")
            for step in range(3):
                rows.append(row("test/neg_elbo", 120 - 5 * step + seed, param_group="", step=step, n_estimates=0,
                                **fields))
            for step in (0, 2):
                rows.append(row("variance_per_element", 1e-3 * (1 + seed), se=1e-5, param_group="encoder",
                                step=step, n_estimates=100, **fields))
    return rows


def test_variance_data_pools_runs_and_keeps_single_intervals():
    data = F.variance_data(frame(fixed_rows()))
    assert list(zip(data["task_label"], data["estimator_label"])) == [
        ("toy-bernoulli", "rloo"), ("toy-quadratic", "stgs(tau=2.0)"), ("toy-quadratic", "gst"),
        ("toy-quadratic", "stgs"), ("toy-quadratic", "stgs(tau=0.5)")]  # failed and training rows left out
    gst = data[data["estimator_label"] == "gst"].iloc[0]
    se = 0.1 / np.sqrt(2)  # two runs' standard errors combined; Welch dof 38
    assert gst["value"] == pytest.approx(1.1) and gst["n"] == 2
    assert gst["ci_high"] - gst["value"] == pytest.approx(stats.t.ppf(0.975, 38) * se)
    stgs = data[data["estimator_label"] == "stgs"].iloc[0]
    assert (stgs["ci_low"], stgs["ci_high"]) == pytest.approx((2.0 - 0.1 * 2.093, 2.0 + 0.1 * 2.093), rel=1e-3)


def test_variance_figure_draws_exactly_its_data_on_a_log_axis():
    df = frame(fixed_rows())
    fig = F.variance_figure(df)
    data = F.variance_data(df)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["toy-bernoulli", "toy-quadratic"]
    ax = axes[1]
    assert ax.get_xscale() == "log"
    part = data[data["task_label"] == "toy-quadratic"]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(part["estimator_label"])
    drawn = {}
    for container in ax.containers:  # one errorbar per estimator family: points and their bars
        line, _, (bars,) = container
        for x, y, seg in zip(line.get_xdata(), line.get_ydata(), bars.get_segments()):
            drawn[int(y)] = (x, seg[0][0], seg[1][0])
    expected = {i: (r.value, r.ci_low, r.ci_high) for i, r in enumerate(part.itertuples())}
    assert drawn.keys() == expected.keys()
    for i, (x, lo, hi) in drawn.items():
        assert (x, lo, hi) == pytest.approx(expected[i])


def test_bias_variance_data_and_figure():
    df = frame(fixed_rows())
    data = F.bias_variance_data(df)
    assert set(data["estimator_label"]) == {"gst", "stgs", "stgs(tau=0.5)", "stgs(tau=2.0)"}  # rloo: no bias row
    assert (data["floor"] == 0.01).all()
    fig = F.bias_variance_figure(df)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    points = np.concatenate([c.lines[0].get_xydata() for c in ax.containers])
    assert sorted(map(tuple, points)) == sorted(zip(data["variance"], data["bias"]))


def test_sweeps_are_found_for_parameters_with_several_values():
    df = frame(fixed_rows())
    assert F.sweep_parameters(df) == ["tau"]  # gst has one τ; rloo's m has one value
    data = F.sweep_data(df, "tau")
    assert set(data["line"]) == {"stgs"}
    variance = data[data["metric"] == "variance"]
    assert list(variance["x"]) == [0.5, 1.0, 2.0] and list(variance["value"]) == [3.0, 2.0, 0.5]
    fig = F.sweep_figure(df, "tau")
    assert [ax.get_xlabel() for ax in fig.axes if ax.get_visible()] == ["tau", "tau"]


def test_training_curves_and_steps_have_bands_over_seeds():
    df = frame(training_rows())
    curves = F.curves_data(df)
    first = curves[(curves["estimator_label"] == "gst") & (curves["step"] == 0)].iloc[0]
    values = np.array([120.0, 121.0, 122.0])  # seeds 0, 1, 2
    assert first["value"] == pytest.approx(values.mean()) and first["n"] == 3
    assert first["ci_high"] - first["value"] == pytest.approx(T2 * values.std(ddof=1) / np.sqrt(3))
    steps = F.steps_data(df)
    assert set(steps["param_group"]) == {"encoder"} and list(steps["step"].unique()) == [0, 2]
    s = steps.iloc[0]  # a training task: the seeds' spread, not the runs' own intervals
    assert s["method"] == "seeds" and s["ci_high"] - s["value"] == pytest.approx(T2 * 1e-3 / np.sqrt(3))
    fig = F.curves_figure(df)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_title() == "mnist-vae: test/neg_elbo" and len(ax.collections) == 2  # one band per estimator


def test_figures_only_for_what_the_data_holds():
    fixed, training = frame(fixed_rows()), frame(training_rows())
    assert F.steps_figure(fixed) is None and F.curves_figure(fixed) is None
    assert F.variance_figure(training) is None and F.bias_variance_figure(training) is None
    assert F.sweep_parameters(training) == []
    assert F.work_normalized_figure(fixed) is None  # no timing rows in this frame


def test_summary_table_mean_and_std_over_seeds_per_estimator_and_tau():
    summary = T.summary_table(frame(fixed_rows() + training_rows()))
    vae = summary[summary["task_label"] == "mnist-vae"]
    assert list(zip(vae["tau"], vae["estimator"])) == [(1.0, "gst"), (0.5, "gst")]
    final = vae.iloc[0]  # the last step's value, over seeds 0, 1, 2
    assert (final["metric"], final["step"], final["seeds"]) == ("test/neg_elbo", 2, 3)
    assert final["mean"] == pytest.approx(111.0) and final["std"] == pytest.approx(1.0)
    gst = summary[(summary["task_label"] == "toy-quadratic") & (summary["estimator"] == "gst")]
    assert dict(zip(gst["metric"], gst["mean"])) == pytest.approx({"bias_norm": 0.2, "variance": 1.1})
    markdown = T.to_markdown(summary)
    assert "## mnist-vae" in markdown and "| 0.5 | gst | 3 | 111 ± 1 |" in markdown
    assert "| 2 | stgs | 1 | 0.2 | 0.5 |" in markdown  # one seed: no ± std
    latex = T.to_latex(summary)
    assert r"\begin{tabular}{rlrr}" in latex and r"111 $\pm$ 1 \\" in latex and r"test/neg\_elbo" in latex


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Real runs: toy-quadratic (two seeds, a τ sweep), toy-bernoulli, and a tiny training task."""
    import torch

    out = tmp_path_factory.mktemp("results")
    base = ["--samples", "400", "--device", "cpu", "--out", str(out)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster
    try:
        for seed in ("0", "1"):
            r = runner.invoke(app, ["run", "-t", "toy-quadratic", "-e", "stgs", "-e", "gst", "-e", "rloo",
                                    "-e", "stgs(tau=0.5)", "-e", "stgs(tau=2.0)", "--seed", seed, *base])
            assert r.exit_code == 0, r.output
        assert runner.invoke(app, ["run", "-t", "toy-bernoulli", "-e", "stgs", "-e", "rloo", *base]).exit_code == 0
        for seed in (0, 1):
            write_training_run(out, ["stgs", "gst"], seed, samples=200, task=ToyTraining(steps=2, measure_every=2))
    finally:
        torch.set_num_threads(threads)
    return out


FIGURES = ["variance", "bias_variance", "work_normalized_variance", "sweep_tau", "steps", "curves"]


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = runner.invoke(app, ["report", str(results), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"{len(FIGURES)} figures" in r.output
    return out


def test_report_writes_figures_tables_and_one_self_contained_page(report):
    out = report
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(f"{n}.{x}" for n in FIGURES
                                                                        for x in ("png", "svg"))
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / "figures" / f"{name}.svg").read_bytes()[:400]
    summary = pd.read_csv(out / "tables" / "summary.csv")
    assert set(summary["task_label"]) == {"toy-quadratic", "toy-bernoulli", "toy-training"}
    assert "\\toprule" in (out / "tables" / "summary.tex").read_text()
    page = (out / "index.html").read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)) == len(FIGURES)
    # Nothing is fetched: no URL attributes other than data: and in-page anchors.
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(u.startswith(("data:", "#")) for u in links)
    assert "http://" not in page and "https://" not in page


def test_report_bad_input_is_one_line(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path / "none"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and r.output.startswith("error: no results at") and not (tmp_path / "r").exists()
    (tmp_path / "failed" / "run").mkdir(parents=True)
    store.write_metrics(tmp_path / "failed" / "run", [row("failed", np.nan, status="failed")])
    r = runner.invoke(app, ["report", str(tmp_path / "failed"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "nothing to report" in r.output and not (tmp_path / "r").exists()


def test_list_and_help_do_not_import_matplotlib():
    code = ("import sys\nfrom gradbench.cli import app\n"
            "try:\n    app(['list'])\nexcept SystemExit:\n    pass\n"
            "assert 'matplotlib' not in sys.modules and 'seaborn' not in sys.modules and 'pandas' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(page: Path, tmp_path: Path) -> tuple[str, list[dict]]:
    """Render ``page`` headless; return the DOM after load and the page's own network requests."""
    netlog = tmp_path / f"{page.stem}-net.json"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--log-net-log={netlog}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    # The browser's own background requests have no origin; a page's requests carry the page's.
    requests = [e["params"] for e in log["events"] if e["type"] == start and "url" in e.get("params", {})
                and e["params"].get("initiator") != "not an origin"]
    return result.stdout, requests


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_opens_in_headless_chromium_without_network(report, tmp_path):
    dom, requests = chromium(report / "index.html", tmp_path)
    images = re.findall(r'<img src="(data:image/png;base64,[^"]+)" alt="([^"]+)"', dom)
    assert [alt for _, alt in images] == ["Variance per estimator", "Bias against variance",
                                          "Work-normalised variance", "Sweep over tau",
                                          "Variance and bias over training", "Training curves"]
    assert "<table" in dom and "toy-training" in dom
    assert requests == []
    # The check can fail: a page with one remote image is caught making a request.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://127.0.0.1:9/x.png"></body></html>')
    _, requests = chromium(control, tmp_path)
    assert [r["url"] for r in requests] == ["http://127.0.0.1:9/x.png"]
