"""The report as a person sees it: no text in a figure overlaps other text or leaves the image, and the
HTML page, rendered by headless Chromium, has no overlapping or cut-off text at a laptop's and a narrow width.

The data reproduce what made the old figures unreadable: two configurations of one task (panel titles
that are long specs), six estimators with nearly equal variance and bias (point labels on top of each
other), and a training task measured in two parameter groups (panels titled inconsistently).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gradbench.reports import figures as F
from gradbench.reports.report import write_report

from rows import estimator_fields, frame, row

LONG = [json.dumps({"logits": [0.5, -0.3, 0.1, 1.2, 0.7, -1.1], "target": [0.2, 0.3, 0.1, 0.4, 0.15, 0.05]}),
        json.dumps({"logits": [0.5, -0.3, 0.1, 1.2], "target": [0.2, 0.3, 0.1, 0.4]})]
CLUSTERED = [("gst", {}, 0.272, 0.129), ("gst(tau=0.5)", {"tau": 0.5}, 0.275, 0.139), ("stgs", {}, 0.251, 0.099),
             ("stgs(tau=0.5)", {"tau": 0.5}, 0.76, 0.06), ("reinforce", {}, 0.62, 0.017), ("rloo", {}, 0.012, 7e-4)]


def crowded_rows():
    rows = []
    for i, params in enumerate(LONG):
        for label, kw, variance, bias in CLUSTERED:
            fields = dict(estimator_fields(label, **kw), task_params=params, run_id=f"r{i}")
            rows += [row("variance", variance * (1 + 0.1 * i), se=0.01 * variance, **fields),
                     row("work_normalized_variance", variance * 1e-5, se=1e-7, **fields),
                     row("bias_norm", bias, se=0.003, **fields), row("bias_noise_floor", 0.007, **fields)]
    for seed in range(2):
        for label, kw in (("gst", {}), ("stgs", {})):
            fields = dict(estimator_fields(label, **kw), task="mnist-vae", task_params="{}", seed=seed,
                          run_id=f"v{seed}")
            for step in (1, 2, 3):
                rows.append(row("test/neg_elbo", 210 - 3 * step + seed, param_group="", step=step, n_estimates=0,
                                **fields))
                rows.append(row("test/iwae_1000", 202.39 - 0.06 * seed, param_group="", step=step, n_estimates=0,
                                **fields))
                for group, scale in (("encoder", 1e-5), ("logits", 1e-6)):
                    rows.append(row("variance_per_element", scale * step * (1 + seed), se=scale / 10, step=step,
                                    param_group=group, **fields))
                    rows.append(row("bias_norm", 0.1 * step, se=0.05, step=step, param_group=group, **fields))
    return rows


def drawn_texts(fig) -> list:
    """(Text artist, box in pixels) of every string the renderer draws (ticks outside the view are not)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    seen = []
    draw_text = renderer.draw_text

    def spy(gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if mtext is not None and s.strip() and mtext not in seen:
            seen.append(mtext)
        return draw_text(gc, x, y, s, prop, angle, ismath, mtext)

    renderer.draw_text = spy
    try:
        fig.canvas.draw()
    finally:
        del renderer.draw_text
    return [(t, Text.get_window_extent(t, renderer)) for t in seen]


def layout_problems(fig) -> list[str]:
    """Texts that leave the figure (would be cut) or overlap another text by more than half a pixel."""
    texts = [(t.get_text(), box) for t, box in drawn_texts(fig)]
    frame_box = fig.bbox
    problems = [f"cut: {s!r}" for s, b in texts if b.x0 < frame_box.x0 - 0.5 or b.x1 > frame_box.x1 + 0.5
                or b.y0 < frame_box.y0 - 0.5 or b.y1 > frame_box.y1 + 0.5]
    for i, (s, a) in enumerate(texts):
        for t, b in texts[i + 1:]:
            if min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5:
                problems.append(f"overlap: {s!r} / {t!r}")
    return problems


@pytest.fixture(scope="module")
def crowded():
    return frame(crowded_rows())


FIGURES = {
    "variance": lambda df: F.variance_figure(df),
    "bias_variance": lambda df: F.bias_variance_figure(df),
    "work_normalized_variance": lambda df: F.work_normalized_figure(df),
    "sweep_tau": lambda df: F.sweep_figure(df, "tau"),
    "steps": lambda df: F.steps_figure(df),
    "curves": lambda df: F.curves_figure(df),
}


@pytest.mark.parametrize("name", FIGURES)
def test_no_text_in_a_figure_overlaps_or_is_cut(crowded, name):
    fig = FIGURES[name](crowded)
    assert fig is not None
    drawn = [t.get_text() for t, _ in drawn_texts(fig)]
    assert len(drawn) >= 8, drawn  # the checker saw the figure's text
    assert layout_problems(fig) == []


def test_every_point_of_the_crowded_panels_keeps_its_label(crowded):
    fig = F.bias_variance_figure(crowded)
    drawn = [t for t, _ in drawn_texts(fig)]
    labels = [t for ax in fig.axes for t in ax.texts]
    assert all(t in drawn for t in labels)
    assert sorted(t.get_text() for t in labels) == sorted([label for label, *_ in CLUSTERED] * 2)


def test_the_overlap_check_can_fail():
    """Two labels at one point, and a title wider than its figure: both are found."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.text(0.5, 0.5, "first label")
    ax.text(0.5, 0.5, "second label")
    ax.set_title("a title far too long to fit in a figure three inches wide, so it is cut")
    problems = layout_problems(fig)
    assert "overlap: 'first label' / 'second label'" in problems
    assert any(p.startswith("cut: 'a title far too long") for p in problems)


def test_panel_titles_name_the_group_alike_for_every_panel_of_a_task(crowded):
    fig = F.steps_figure(crowded)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["mnist-vae · encoder"] * 2 + ["mnist-vae · logits"] * 2
    fig = F.variance_figure(crowded)  # one group (logits) per task: the task alone, each spec wrapped whole
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert [" ".join(t.split("\n")) for t in titles] == [
        "toy-quadratic(logits=[0.5, -0.3, 0.1, 1.2, 0.7, -1.1], target=[0.2, 0.3, 0.1, 0.4, 0.15, 0.05])",
        "toy-quadratic(logits=[0.5, -0.3, 0.1, 1.2], target=[0.2, 0.3, 0.1, 0.4])"]


# -- the HTML page in a real browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# Measures every run of text as laid out (one box per line fragment) and every image; reports texts that
# overlap, leave the page's width (outside a sideways-scrolling table box) or images shown shrunk.
PROBE = """
(function () {
  const width = document.documentElement.clientWidth, boxes = [], problems = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(n);
    const scroller = n.parentElement.closest(".scroll");
    for (const r of range.getClientRects()) if (r.width > 0 && r.height > 0) {
      const seen = scroller ? scroller.getBoundingClientRect() : null;
      boxes.push({text: n.textContent.trim().slice(0, 60), x0: r.left, x1: r.right, y0: r.top, y1: r.bottom,
                  scrolls: !!scroller && (r.right > seen.right + 0.5)});
    }
  }
  for (let i = 0; i < boxes.length; i++) {
    const a = boxes[i];
    if (!a.scrolls && (a.x0 < -0.5 || a.x1 > width + 0.5)) problems.push("cut: " + a.text);
    for (let j = i + 1; j < boxes.length; j++) {
      const b = boxes[j];
      if (Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0) > 0.5 && Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0) > 0.5)
        problems.push("overlap: " + a.text + " / " + b.text);
    }
  }
  const images = [...document.images].map(im => ({alt: im.alt, right: im.getBoundingClientRect().right,
                                                   scale: im.getBoundingClientRect().width / im.naturalWidth}));
  for (const im of images) if (im.right > width + 0.5) problems.push("image cut: " + im.alt);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({width, texts: boxes.length, images, problems});
  document.body.appendChild(out);
})();
"""


def browser_layout(page: Path, tmp_path: Path, width: int) -> dict:
    """Open a copy of ``page`` with the probe in headless Chromium at ``width`` pixels; the probe's findings.

    The copy drops the page's Content-Security-Policy so the probe may run; nothing else changes.
    """
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text())
    probe = tmp_path / f"probe-{width}.html"
    probe.write_text(html.replace("</body>", f"<script>{PROBE}</script></body>"))
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / f'profile-{width}'}",
                             f"--window-size={width},1000", "--virtual-time-budget=5000", "--dump-dom",
                             probe.as_uri()], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stdout[-2000:]
    import html as html_lib

    return json.loads(html_lib.unescape(found.group(1)))


@pytest.fixture(scope="module")
def crowded_report(tmp_path_factory, crowded):
    from gradbench import store

    root = tmp_path_factory.mktemp("crowded")
    for run_id in sorted(set(crowded["run_id"])):
        (root / "results" / run_id).mkdir(parents=True)
        store.write_metrics(root / "results" / run_id, [r for r in crowded_rows() if r["run_id"] == run_id])
    write_report(root / "results", root / "report")
    return root / "report" / "index.html"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [1280, 800])
def test_report_page_in_chromium_has_no_overlapping_or_cut_text(crowded_report, tmp_path, width):
    found = browser_layout(crowded_report, tmp_path, width)
    assert found["texts"] > 100 and len(found["images"]) == len(FIGURES)
    assert found["problems"] == []
    if width == 1280:  # a laptop's window shows every figure at its own size: its text is not shrunk
        assert all(im["scale"] > 0.99 for im in found["images"]), found["images"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_browser_probe_can_fail(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><p style="position:absolute;top:10px">one text</p>'
                    '<p style="position:absolute;top:12px">another text</p>'
                    f'<p style="white-space:nowrap">{"wide " * 400}</p></body></html>')
    problems = browser_layout(page, tmp_path, 800)["problems"]
    assert "overlap: one text / another text" in problems
    assert any(p.startswith("cut: wide wide") for p in problems)
