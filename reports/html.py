"""One self-contained HTML page: figures embedded as data URIs, inline CSS, no scripts, no network."""

from __future__ import annotations

import base64
import html

import pandas as pd

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-top: 0; }
figure { margin: 2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92rem; max-width: 60rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
nav a { margin-right: 1rem; }
.scroll { overflow-x: auto; max-width: 100%; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(df: pd.DataFrame) -> str:
    """A table in a box that scrolls sideways when the window is narrower than it: the page itself never does."""
    return '<div class="scroll">' + df.to_html(index=False, escape=True, border=0, na_rep="–") + "</div>"


def page(title: str, meta: str, runs: pd.DataFrame, figures: list[tuple[str, str, str, bytes]],
         tables: list[tuple[str, pd.DataFrame]]) -> str:
    """figures: (id, heading, caption, png bytes); tables: (heading, wide table)."""
    esc = html.escape
    nav = " ".join(f'<a href="#{esc(fid)}">{esc(heading)}</a>' for fid, heading, _, _ in figures)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        # No request may leave the page: everything it shows is inside it.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{esc(title)}</h1>", f'<p class="meta">{esc(meta)}</p>',
        f"<nav>{nav} <a href=\"#summary\">summary tables</a> <a href=\"#runs\">runs</a></nav>",
    ]
    for fid, heading, caption, png in figures:
        parts += [f'<section id="{esc(fid)}">', f"<h2>{esc(heading)}</h2>", "<figure>",
                  f'<img src="{data_uri(png)}" alt="{esc(heading)}">',
                  f"<figcaption>{esc(caption)}</figcaption>", "</figure>", "</section>"]
    parts += ['<section id="summary">', "<h2>Summary: mean ± std over seeds</h2>"]
    for heading, table in tables:
        parts += [f"<h3>{esc(heading)}</h3>", _table(table)]
    if not tables:
        parts.append("<p>No values to summarise.</p>")
    parts += ["</section>", '<section id="runs">', "<h2>Runs</h2>", _table(runs), "</section>", "</body>", "</html>"]
    return "\n".join(parts)
