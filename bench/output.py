"""What a command prints: tables that never cut a number, for people or for programs.

``run``, ``verify``, ``compare`` and ``list`` build :class:`Table` objects and hand them
to one :class:`Printer`, which writes them in the format the user chose:

- ``table``: a boxed table when it fits the console's width (a terminal's, else
  ``COLUMNS``, else 80); when it would have to cut a cell, the same rows as records,
  one field a line, wrapped at spaces only. A number is never cut or split.
- ``markdown``: a pipe table under its title (paste it into a paper's notes or a PR).
- ``csv``: one header, one line per row; numbers at full precision, each interval as
  ``<key>_ci_low`` and ``<key>_ci_high``; the first column names the table.
- ``json``: ``{"tables": [{"name", "title", "rows": [...]}], "messages": [...], ...}``
  with the same keys as the CSV.

In the machine formats standard output holds only the data: sentences for people go
to standard error (csv) or into ``messages`` (json).
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Union

from .errors import UserError, did_you_mean
from .numbers import format_number

FORMATS = ("table", "markdown", "csv", "json")
CHECK_FORMATS = ("junit", "github")  # for pass/fail checks (compare): what CI systems display
FORMAT_HELP = "Output: table (boxed, or one field a line when narrow), markdown, csv or json."


@dataclass(frozen=True)
class Number:
    """A measured value with its 95% interval (``low``/``high``, NaN when it has none).

    People see ``value ±h`` (h the larger distance to an end of the interval), in
    :func:`~gradbench.numbers.format_number`'s digits, times ``scale`` (seconds shown as
    µs); programs get the stored value and interval ends, unscaled.
    """

    value: float | None
    low: float = math.nan
    high: float = math.nan
    scale: float = 1.0
    digits: int = 3  # significant digits shown (training curves: 4, so a −ELBO reads 145.6)

    @property
    def has_interval(self) -> bool:
        return self.value is not None and not (math.isnan(self.low) or math.isnan(self.high))

    def __str__(self) -> str:
        shown = format_number(None if self.value is None else self.value * self.scale, self.digits)
        if not self.has_interval:
            return shown
        half = max(self.high - self.value, self.value - self.low)
        return f"{shown} ±{format_number(half * self.scale, self.digits)}"


@dataclass(frozen=True)
class Mark:
    """Text with a rich style (colour) in the terminal; plain text everywhere else."""

    text: str
    style: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Joined:
    """Items shown on one line, ``sep``-joined and wrapped at spaces; a list for programs."""

    items: tuple[str, ...]
    sep: str = ", "

    def __str__(self) -> str:
        return self.sep.join(self.items) or "–"


Cell = Union[str, int, Number, Mark, Joined, list, tuple, None]  # a list or tuple: one item a line


@dataclass(frozen=True)
class Column:
    """``key``: the machine name (CSV header, JSON key); ``heading``: what people read."""

    key: str
    heading: str = ""
    numeric: bool = False  # right-aligned
    machine_only: bool = False  # only in csv and json (e.g. a status column the table shows otherwise)

    @property
    def title(self) -> str:
        return self.heading or self.key


@dataclass
class Table:
    """A titled table; the first ``keys`` columns name a row (the heading of its record when narrow)."""

    name: str
    title: str
    columns: list[Column]
    rows: list[list[Cell]] = field(default_factory=list)
    keys: int = 1
    show_lines: bool = False  # rules between rows (for cells of several lines)

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.name}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def shown(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if not c.machine_only]


def check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    if fmt not in allowed:
        raise UserError(f"unknown --format {fmt!r}{did_you_mean(fmt, allowed)} (choose {', '.join(allowed)})")
    return fmt


def text(cell: Cell) -> str:
    """What a person reads in a cell (several lines joined by newlines)."""
    if cell is None:
        return "–"
    if isinstance(cell, (list, tuple)):
        return "\n".join(map(str, cell)) or "–"
    return str(cell)


class Printer:
    """One command's standard output in one format; a context manager (machine formats are written at the end).

    Nothing is written for csv or json if the block raises: a failed command leaves no half document.
    """

    def __init__(self, fmt: str = "table", console=None, err_console=None):
        from rich.console import Console

        self.format = fmt
        self.console = console or Console(highlight=False)
        self.err = err_console or Console(stderr=True, highlight=False)
        self.tables: list[Table] = []
        self.messages: list[str] = []
        self.fields: dict[str, Any] = {}

    @property
    def human(self) -> bool:
        return self.format in ("table", "markdown")

    def __enter__(self) -> Printer:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()

    def table(self, table: Table) -> None:
        if self.format == "table":
            print_table(self.console, table)
        elif self.format == "markdown":
            self._write(markdown(table) + "\n")
        else:
            self.tables.append(table)

    def line(self, message: str, style: str | None = None) -> None:
        """A sentence for people: printed (table, markdown), to stderr (csv) or into ``messages`` (json).

        Printed whole on one line (a terminal folds it at its edge; a pipe keeps it for grep): a path, a
        command or a message is never broken by an inserted newline.
        """
        if self.format == "table":
            self.console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)
        elif self.format == "markdown":
            self._write(message + "\n\n")
        elif self.format == "csv":
            self.err.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            self.messages.append(message)

    def field(self, key: str, value: Any) -> None:
        """A top-level JSON field (a list: each call appends); ignored by the other formats."""
        self.fields.setdefault(key, []).append(value)

    def close(self) -> None:
        if self.format == "csv" and self.tables:
            self._write(to_csv(self.tables))
        elif self.format == "json":
            doc = {"tables": [{"name": t.name, "title": t.title, "rows": records(t)} for t in self.tables],
                   "messages": self.messages, **self.fields}
            self._write(json.dumps(_finite(doc), indent=1, ensure_ascii=False) + "\n")

    def _write(self, data: str) -> None:
        self.console.file.write(data)


# -- table: boxed when it fits, records when narrow --------------------------------------------------------------

def print_table(console, table: Table) -> None:
    """The boxed table if the console's width shows every cell whole, else one record per row."""
    rich_table = _rich(table)
    if _fits(rich_table, table, console.width):
        console.print(rich_table)
    else:
        for line in vertical(table, console.width):
            console.print(line, soft_wrap=True)  # wrapped already; soft_wrap: rich neither wraps nor crops


def _rich(table: Table):
    from rich.table import Table as RichTable
    from rich.text import Text

    shown = table.shown()
    out = RichTable(title=table.title, show_lines=table.show_lines)
    for i in shown:
        c = table.columns[i]
        out.add_column(c.title, justify="right" if c.numeric else "left", overflow="ellipsis")
    for row in table.rows:
        cells = []
        for i in shown:
            cell = row[i]
            cells.append(Text(cell.text, style=cell.style) if isinstance(cell, Mark) else Text(text(cell)))
        out.add_row(*cells)
    return out


def _fits(rich_table, table: Table, width: int) -> bool:
    """Whether rich lays the table out at ``width`` without cutting a word (rich marks a cut word with "…")."""
    from rich.console import Console

    sink = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    sink.print(rich_table)
    given = table.title + "".join(c.title for c in table.columns) + "".join(text(c) for r in table.rows for c in r)
    return "…" not in sink.file.getvalue() or "…" in given


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` (at least 20) characters, broken at spaces only: a long word overflows whole."""
    return textwrap.wrap(text, max(width, 20), break_long_words=False, break_on_hyphens=False) or [""]


def vertical(table: Table, width: int) -> list:
    """One record per row: its key cells as a heading, then ``field  value`` lines wrapped at spaces only."""
    from rich.text import Text

    shown = [i for i in table.shown() if i >= table.keys]
    pad = min(max((len(table.columns[i].title) for i in shown), default=0), max(12, width // 3))
    indent = 2 + pad + 2
    lines: list = [Text(line, style="bold") for line in _wrap(table.title, width)] if table.title else []
    for row in table.rows:
        if lines:
            lines.append(Text(""))
        head = " · ".join(t for t in (text(row[i]) for i in range(table.keys)) if t not in ("", "–"))
        lines.append(Text(head or "–", style="bold"))
        for i in shown:
            cell = row[i]
            style = cell.style if isinstance(cell, Mark) else ""
            values = [w for part in text(cell).split("\n") for w in _wrap(part, width - indent)]
            name = table.columns[i].title
            first = f"  {name.ljust(pad)}  " if len(name) <= pad else f"  {name}\n{' ' * indent}"
            for k, value in enumerate(values):
                line = Text(first if k == 0 else " " * indent)
                line.append(value, style=style)
                lines.append(line)
    return lines + [Text("")]


# -- markdown, csv, json ------------------------------------------------------------------------------------------

def markdown(table: Table) -> str:
    shown = table.shown()
    esc = lambda s: s.replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
    out = [f"**{esc(table.title)}**", ""] if table.title else []
    out.append("| " + " | ".join(esc(table.columns[i].title) for i in shown) + " |")
    out.append("|" + "|".join("---:" if table.columns[i].numeric else "---" for i in shown) + "|")
    out += ["| " + " | ".join(esc(text(row[i])) for i in shown) + " |" for row in table.rows]
    return "\n".join(out) + "\n"


def _keys(column: Column, cells: list[Cell]) -> list[str]:
    """A column's machine keys: an interval adds ``_ci_low`` and ``_ci_high``."""
    if any(isinstance(c, Number) and c.has_interval for c in cells):
        return [column.key, f"{column.key}_ci_low", f"{column.key}_ci_high"]
    return [column.key]


def _machine(cell: Cell, n: int) -> list:
    """A cell as ``n`` machine values (n = 3 for a column with intervals)."""
    if isinstance(cell, Number):
        values = [cell.value, cell.low, cell.high][:n]
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
    if isinstance(cell, (list, tuple)):
        value = [str(x) for x in cell]
    elif isinstance(cell, Joined):
        value = list(cell.items)
    elif isinstance(cell, Mark):
        value = cell.text
    else:
        value = cell
    return [value] + [None] * (n - 1)


def records(table: Table) -> list[dict[str, Any]]:
    """The rows as dicts of machine keys (JSON)."""
    spec = [(i, _keys(c, [r[i] for r in table.rows])) for i, c in enumerate(table.columns)]
    return [{k: v for i, keys in spec for k, v in zip(keys, _machine(row[i], len(keys)))} for row in table.rows]


def to_csv(tables: list[Table]) -> str:
    """Every table's records under one header (the union of their keys), a first column ``table``."""
    rows = [{"table": t.name, **r} for t in tables for r in records(t)]
    header = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, header, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(v) for k, v in r.items()})
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return value


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: null for NaN, strings "inf" / "-inf" for infinities."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- checks for CI: JUnit XML and GitHub Actions annotations ------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One pass/fail check: ``outcome`` is passed, failed, warning (passed, but said) or skipped."""

    group: str  # JUnit classname (e.g. "toy-quadratic · gst")
    name: str  # JUnit test name (e.g. "logits variance")
    outcome: str
    message: str  # one line: what happened and by how much


def junit(suite: str, checks: list[Check], title: str = "") -> str:
    """A JUnit XML report (one testsuite): CI systems list the failed checks with their messages."""
    from xml.sax.saxutils import escape, quoteattr

    failed = sum(c.outcome == "failed" for c in checks)
    skipped = sum(c.outcome == "skipped" for c in checks)
    head = (f"<testsuite name={quoteattr(suite)} tests=\"{len(checks)}\" failures=\"{failed}\" errors=\"0\" "
            f"skipped=\"{skipped}\">")
    out = ['<?xml version="1.0" encoding="UTF-8"?>', f"<testsuites name={quoteattr(suite)}>", head]
    if title:
        out.append(f"<properties><property name=\"compared\" value={quoteattr(title)}/></properties>")
    for c in checks:
        case = f"<testcase classname={quoteattr(c.group)} name={quoteattr(c.name)}"
        if c.outcome == "failed":
            out += [case + ">", f"<failure message={quoteattr(c.message)} type=\"regression\">{escape(c.message)}"
                    "</failure>", "</testcase>"]
        elif c.outcome == "skipped":
            out += [case + ">", f"<skipped message={quoteattr(c.message)}/>", "</testcase>"]
        elif c.outcome == "warning":
            out += [case + ">", f"<system-out>{escape(c.message)}</system-out>", "</testcase>"]
        else:
            out.append(case + "/>")
    out += ["</testsuite>", "</testsuites>"]
    return "\n".join(out) + "\n"


def github(checks: list[Check]) -> str:
    """GitHub Actions workflow commands: an error annotation per failed check, a warning per warning."""
    data = lambda s: s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")  # noqa: E731
    prop = lambda s: data(s).replace(":", "%3A").replace(",", "%2C")  # noqa: E731
    level = {"failed": "error", "warning": "warning"}
    return "".join(f"::{level[c.outcome]} title={prop(c.group + ': ' + c.name)}::{data(c.message)}\n"
                   for c in checks if c.outcome in level)
