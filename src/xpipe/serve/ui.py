"""Pieces every page uses: messages, tables of query results, links and the page styles."""

from __future__ import annotations

import html as html_text
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import quote

import polars as pl
from dash import html
from dash.dash_table.DataTable import DataTable

ERROR_ID = "app-error"  # the shell's message box for failures of any callback

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
.xp-nav { display: flex; gap: 1.2em; align-items: baseline; padding: .6em 1.2em;
          background: #1f3b57; }
.xp-nav a { color: #e8eef5; text-decoration: none; }
.xp-nav a.xp-brand { font-weight: 600; margin-right: 1em; }
.xp-main { padding: .8em 1.2em; max-width: 1400px; }
.xp-message { padding: .6em .9em; margin: .6em 0; border-radius: 4px; }
.xp-error { background: #fdecea; border: 1px solid #e0a39b; }
.xp-note { background: #eef3f8; border: 1px solid #b7c7d8; }
.xp-facts td { padding: .15em .8em .15em 0; vertical-align: top; }
.xp-form { display: flex; gap: .6em; align-items: end; flex-wrap: wrap; margin: .5em 0; }
.xp-form label { display: flex; flex-direction: column; font-size: .85em; }
code, pre { background: #f4f4f4; }
pre { padding: .6em; white-space: pre-wrap; }
"""


def message(text: str, *, error: bool = True, id: str | None = None) -> html.Div:
    """A message in the page: what went wrong (error) or a note."""
    css = "xp-message " + ("xp-error" if error else "xp-note")
    return html.Div(text, className=css, id=id) if id else html.Div(text, className=css)


def error_page(status: int, text: str) -> str:
    """The small HTML page a bad URL gets with its 4xx status: the message, no traceback."""
    title = {400: "Bad request", 404: "Not found"}.get(status, "Error")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{status} {title} — "
            f"xpipe</title><style>{STYLE}</style></head><body><nav class='xp-nav'>"
            f"<a class='xp-brand' href='/'>xpipe</a></nav><main class='xp-main'>"
            f"<h1>{status} {title}</h1><div class='xp-message xp-error' id='http-error'>"
            f"{html_text.escape(text)}</div><p><a href='/'>overview</a> · "
            f"<a href='/search'>search</a></p></main></body></html>")


def source_href(name: str) -> str:
    """The source page's URL for a CSC name (percent-encoded: names hold spaces and '+')."""
    return "/source/" + quote(name, safe="")


def facts_table(rows: Sequence[tuple[str, Any]], id: str | None = None) -> html.Table:
    """A two-column table of labelled values."""
    body = [html.Tr([html.Td(label), html.Td(value)]) for label, value in rows]
    rows_ = html.Tbody(body)
    return (html.Table(rows_, className="xp-facts", id=id) if id
            else html.Table(rows_, className="xp-facts"))


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


def data_table(frame: pl.DataFrame, id: str, *, link_names: bool = False,
               page_size: int = 25) -> DataTable:
    """A frame as a sortable table; with `link_names`, its `name` column links to each
    source's page (markdown cells)."""
    columns: list[dict[str, Any]] = []
    for column in frame.columns:
        spec: dict[str, Any] = {"name": column, "id": column}
        if link_names and column == "name":
            spec["presentation"] = "markdown"
        columns.append(spec)
    records = [{key: _cell(value) for key, value in row.items()}
               for row in frame.iter_rows(named=True)]
    if link_names and "name" in frame.columns:
        for record in records:
            record["name"] = f"[{record['name']}]({source_href(str(record['name']))})"
    return DataTable(
        id=id, columns=cast(Any, columns), data=cast(Any, records), page_size=page_size, sort_action="native",
        markdown_options={"link_target": "_self"},
        style_table={"overflowX": "auto"},
        style_cell={"fontFamily": "system-ui, sans-serif", "fontSize": "0.85em",
                    "padding": "2px 6px", "textAlign": "left", "maxWidth": "24em",
                    "overflow": "hidden", "textOverflow": "ellipsis"},
        style_header={"fontWeight": "600", "backgroundColor": "#eef3f8"})
