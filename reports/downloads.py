"""Every table of the page as a CSV download, embedded as a data: URL so that the page stays one file.

The CSV is read back from the rendered table itself, so that no table can lack one or disagree with
what the page shows. A cell's ``data-value`` (every digit, see the template's ``full`` filter) wins
over its rounded text; a column whose cells carry ``data-lo``/``data-hi`` (a confidence interval)
gets two more columns for them.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from html.parser import HTMLParser

TABLE = re.compile(r"<table\b[^>]*>.*?</table>", re.S)  # the template nests no table in another


class _Cells(HTMLParser):
    """Rows of cells, each cell {"text", "value", "lo", "hi", "header"}, from one table's HTML."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows: list[list[dict]] = []
        self.cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th") and self.rows:
            a = dict(attrs)
            self.cell = {"text": "", "value": a.get("data-value"), "lo": a.get("data-lo"), "hi": a.get("data-hi"),
                         "header": tag == "th"}
            self.rows[-1].append(self.cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def table_csv(table_html: str) -> str:
    """The CSV text of one rendered table."""
    parser = _Cells()
    parser.feed(table_html)
    rows = [r for r in parser.rows if r]
    width = max((len(r) for r in rows), default=0)
    with_ci = {i for r in rows for i, c in enumerate(r) if c["lo"] or c["hi"]}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for r in rows:
        line = []
        for i in range(width):
            c = r[i] if i < len(r) else {"text": "", "value": None, "lo": None, "hi": None, "header": False}
            text = " ".join(c["text"].split())
            if c["header"]:
                line.append(text)
                if i in with_ci:
                    line += [f"{text} CI low", f"{text} CI high"]
                continue
            line.append(c["value"] if c["value"] else text)
            if i in with_ci:
                line += [c["lo"] or "", c["hi"] or ""]
        writer.writerow(line)
    return out.getvalue()


def add_csv_links(html: str) -> str:
    """The page with a "CSV" download link before every table (named after the table's id or class, numbered)."""
    count = 0

    def link(match: re.Match) -> str:
        nonlocal count
        count += 1
        table = match.group(0)
        attrs = dict(re.findall(r'(?<![\w-])(id|class|data-study)="([^"]*)"', table.split(">", 1)[0]))
        name = "-".join(filter(None, (attrs.get("data-study"), attrs.get("id") or attrs.get("class")))) or "table"
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
        data = base64.b64encode(table_csv(table).encode()).decode()
        return (f'<a class="csv" download="{count:02d}-{stem}.csv" href="data:text/csv;charset=utf-8;base64,{data}">'
                f"CSV</a>{table}")

    return TABLE.sub(link, html)
