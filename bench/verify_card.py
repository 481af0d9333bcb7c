"""The verdict of ``gradbench verify`` as tables (the CLI prints them) and a one-page card (Markdown and HTML).

The card is meant to be pasted into a paper's appendix: what the estimator declares,
whether each declaration held on each task, the bias and variance figures with their
intervals, and how they were obtained.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from .numbers import format_number
from .store import _atomic_write

# Underscored: pandas.read_parquet(results folder) skips them, as it skips the sidecar.
CARD_MD, CARD_HTML = "_verdict.md", "_verdict.html"
CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; } .meta { color: #666; }
"""


def _interval(metric) -> str:
    if metric is None:
        return "–"
    return f"{format_number(metric.value)} [{format_number(metric.ci_low)}, {format_number(metric.ci_high)}]"


def _ratio(r) -> str:
    return f"{format_number(r.value)} [{format_number(r.low)}, {format_number(r.high)}]" if r is not None else "–"


def bias_table(verdict) -> tuple[list[str], list[list[str]]]:
    """Per task and group: bias, test, evaluations, relaxed points, verdict."""
    head = ["task", "group", "bias ‖E ĝ − g‖ [95%]", "relative bias [95%]", "detectable", "p (Holm)",
            "bias", "evaluations counted / declared", "relaxed points", "verdict"]
    body = []
    for c in verdict.checks:
        if c.status != "ok":
            body.append([c.task, c.group, "–", "–", "–", "–", "–", "–", "–", f"failed: {c.message}"])
            continue
        detected = ("at rounding floor" if c.at_rounding else "detected" if c.bias_detected else "not detected")
        declared = "?" if c.evaluations_declared is None else str(c.evaluations_declared)
        body.append([c.task, c.group, _interval(c.bias), _interval(c.relative_bias), format_number(c.detectable),
                     format_number(c.p_holm) if c.tested else "–", detected, f"{format_number(c.evaluations_counted)} / {declared}",
                     "yes" if c.relaxed_points else "no", "contradicted" if c.problems else "holds"])
    return head, body


def ratio_table(verdict) -> tuple[list[str], list[list[str]]]:
    """Per task and baseline: variance and work-normalised variance ratios (estimator / baseline)."""
    head = ["task", "group", "baseline", "variance ratio [95%]", "work-normalised variance ratio [95%]"]
    body = []
    for c in verdict.checks:
        for baseline, (var, work) in c.ratios.items():
            body.append([c.task, c.group, baseline, _ratio(var), _ratio(work)])
    return head, body


def summary_lines(verdict) -> list[str]:
    d = verdict.declared
    unbiased = "unbiased" if d.get("unbiased") is True else "biased"
    detectable = [c.detectable for c in verdict.checks if c.status == "ok" and math.isfinite(c.detectable)]
    lines = [
        f"Declared: {unbiased}; families {', '.join(d.get('families', []))}; {d.get('evaluations')} evaluation(s) "
        f"of f per estimate; relaxed_f = {d.get('relaxed_f')}; differentiable_f = {d.get('differentiable_f')}; "
        f"stateful = {d.get('stateful')}.",
        f"Budget {verdict.budget}: {verdict.samples:,} estimates per task and estimator, seed {verdict.seed}, "
        f"exact references; common random numbers with {', '.join(verdict.baselines) or 'no baselines'}.",
        f"Test of 'unbiased' per task: z = ‖E ĝ − g‖ / √(variance/S), p = min(1, 2(1 − Φ(z))) "
        f"(Székely–Bakirov), Holm over {sum(c.tested for c in verdict.checks)} tasks at family-wise "
        f"false-alarm rate {verdict.alpha}.",
    ]
    if detectable:
        lines.append(f"Resolution: relative biases from {format_number(min(detectable))} (easiest task) to "
                     f"{format_number(max(detectable))} (hardest) are detected with 80% probability ('detectable').")
    if verdict.skipped:
        names = dict.fromkeys(s.split(":")[0].split("(")[0] for s in verdict.skipped)
        lines.append(f"Not run, as the estimator does not fit them: {', '.join(names)}.")
    return lines


def verdict_line(verdict) -> str:
    if verdict.holds:
        return f"{verdict.label}: every declaration holds on {len(verdict.checks)} task checks."
    return f"{verdict.label}: {len(verdict.problems)} declaration(s) contradicted."


def _md_table(head: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in body]
    return "\n".join(lines)


def markdown(verdict, meta: dict) -> str:
    parts = [f"# gradbench verify: {verdict.label}", "", f"**{verdict_line(verdict)}**", ""]
    parts += [f"- {p}" for p in verdict.problems] + ([""] if verdict.problems else [])
    parts += [f"- {line}" for line in summary_lines(verdict)]
    parts += ["", "## Bias, evaluations and relaxed points", "",
              _md_table(*bias_table(verdict)), "", "## Variance against the baselines (estimator / baseline)", "",
              _md_table(*ratio_table(verdict)), "",
              "Ratios below 1 favour the estimator. Work-normalised variance is variance × seconds per estimate "
              "(machine-dependent); intervals are approximate (delta method on the log ratio).", "",
              f"gradbench {meta.get('gradbench')} · torch {meta.get('torch')} · run {meta.get('run_id')} · "
              f"{verdict.seconds:.1f} s", ""]
    return "\n".join(parts)


def html_page(verdict, meta: dict) -> str:
    esc = html.escape

    def table(head, body):
        rows = "".join("<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in r) + "</tr>" for r in body)
        return ("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
                + rows + "</tbody></table>")

    colour = "#1a7f37" if verdict.holds else "#cf222e"
    problems = "".join(f"<li>{esc(p)}</li>" for p in verdict.problems)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>gradbench verify: {esc(verdict.label)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>gradbench verify: {esc(verdict.label)}</h1>",
        f'<p style="color:{colour};font-weight:bold">{esc(verdict_line(verdict))}</p>',
        f"<ul>{problems}</ul>" if problems else "",
        f"<p>{esc(' '.join(summary_lines(verdict)))}</p>",
        "<h2>Bias, evaluations and relaxed points</h2>", table(*bias_table(verdict)),
        "<h2>Variance against the baselines (estimator / baseline)</h2>", table(*ratio_table(verdict)),
        "<p>Ratios below 1 favour the estimator. Work-normalised variance is variance × seconds per estimate "
        "(machine-dependent); intervals are approximate (delta method on the log ratio).</p>",
        f'<p class="meta">gradbench {esc(str(meta.get("gradbench")))} · torch {esc(str(meta.get("torch")))} · '
        f'run {esc(str(meta.get("run_id")))} · {verdict.seconds:.1f} s</p>',
        "</body>", "</html>"])


def write_card(verdict, run_dir: Path, meta: dict) -> tuple[Path, Path]:
    """_verdict.md and _verdict.html in the run folder (atomic writes)."""
    md, page = run_dir / CARD_MD, run_dir / CARD_HTML
    _atomic_write(md, lambda fh: fh.write(markdown(verdict, meta).encode()))
    _atomic_write(page, lambda fh: fh.write(html_page(verdict, meta).encode()))
    return md, page

