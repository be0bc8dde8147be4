"""Pieces every page uses: messages, tables of query results, links and the page styles."""

from __future__ import annotations

import html as html_text
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import polars as pl
from dash import dcc, html
from dash.development.base_component import Component

ERROR_ID = "app-error"  # the shell's message box for failures of any callback

# Links inside the HTML tables navigate within the app as dcc.Link does (history.pushState and
# the event dcc.Location listens for), without reloading Dash and plotly.js; a modified click
# (new tab) stays a plain link.
NAVIGATE = """
document.addEventListener('click', function (event) {
  const link = event.target.closest('a[data-xp-link]');
  if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey
      || event.altKey) { return; }
  event.preventDefault();
  window.history.pushState({}, '', link.getAttribute('href'));
  window.dispatchEvent(new CustomEvent('_dashprivate_pushstate'));
  window.scrollTo(0, 0);
});
"""

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
.xp-columns { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1.3fr);
              gap: 0 2em; align-items: start; }
.xp-columns h2:first-child { margin-top: .3em; }
h1 { margin: .3em 0 .2em; font-size: 1.6em; }
h2 { font-size: 1.15em; margin: 1em 0 .3em; }
.xp-facts td { padding: .15em .8em .15em 0; vertical-align: top; }
.xp-form { display: flex; gap: .6em; align-items: end; flex-wrap: wrap; margin: .5em 0; }
.xp-form label { display: flex; flex-direction: column; font-size: .85em; }
code, pre { background: #f4f4f4; }
.xp-table-box { overflow-x: auto; max-height: 36em; overflow-y: auto; margin: .4em 0; }
.xp-table { border-collapse: collapse; font-size: .85em; }
.xp-table th { position: sticky; top: 0; background: #eef3f8; text-align: left; }
.xp-table th, .xp-table td { padding: 2px 8px; border-bottom: 1px solid #e4e4e4;
                             white-space: nowrap; }
pre { padding: .6em; white-space: pre-wrap; }
"""


def columns(left: list[Component], right: list[Component]) -> html.Div:
    """Two columns side by side (the right one wider, for a figure)."""
    return html.Div([html.Div(left), html.Div(right)], className="xp-columns")


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


def cell_text(value: Any) -> str:
    """How a value reads in a table: floats rounded to 6 decimals, missing as an empty cell."""
    if value is None:
        return ""
    return str(round(value, 6)) if isinstance(value, float) else str(value)


def data_table(frame: pl.DataFrame, id: str, *, link_names: bool = False) -> dcc.Markdown:
    """A frame as an HTML table (scrolling when large); with `link_names`, its `name` column
    links to each source's page. One component holding escaped HTML: Dash's renderer takes
    seconds for a thousand rows built as one component per cell."""
    def cell(column: str, value: Any) -> str:
        text = html_text.escape(cell_text(value))
        if link_names and column == "name" and value is not None:
            href = html_text.escape(source_href(str(value)))
            return f'<td><a href="{href}" data-xp-link="1">{text}</a></td>'
        return f"<td>{text}</td>"

    head = "".join(f"<th>{html_text.escape(column)}</th>" for column in frame.columns)
    body = "".join("<tr>" + "".join(cell(c, v) for c, v in row.items()) + "</tr>"
                   for row in frame.iter_rows(named=True))
    table = (f'<table id="{html_text.escape(id)}" class="xp-table"><thead><tr>{head}</tr>'
             f"</thead><tbody>{body}</tbody></table>")
    return dcc.Markdown(table, dangerously_allow_html=True, className="xp-table-box",
                        id=f"{id}-box")
