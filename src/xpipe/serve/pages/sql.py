"""SQL (`/sql`): the user's read-only statements on the warehouse, through the same guard as
`xpipe sql` (warehouse.user_sql: only reading statements run, the configuration is locked),
on a cursor of the server's read-only connection. A result shows its first
`settings.sql_max_rows` rows and says how many there are; a query running longer than
`settings.sql_time_limit_s` is interrupted; the download writes the whole result as CSV,
Parquet, VOTable or FITS with its provenance (warehouse.file_formats) into the server's
private temporary folder, and the page gets a one-time link that streams it from disk
(serve.downloads; the browser follows it by itself). Off unless
`settings.allow_sql` (a query can read the server's local files)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import dash
import duckdb
import polars as pl
import pyarrow as pa
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from xpipe.core.errors import UserQueryError
from xpipe.serve import ui
from xpipe.serve.context import PageContext
from xpipe.serve.downloads import Pending
from xpipe.serve.routing import require_no_subpath
from xpipe.warehouse.file_formats import FILE_SUFFIXES, FORMATS
from xpipe.warehouse.user_sql import run_user_sql, single_relation, write_relation

PATH = "/sql"
TITLE = "SQL"
EXAMPLE = ("SELECT agg_master_class, master_class, count(*) AS sources\n"
           "FROM results.uniquely_classified GROUP BY ALL ORDER BY 1, 3 DESC")
OFF = ("The SQL page is off: this server listens beyond this machine and a query can read "
       "the server's files. Start it with `xpipe serve --allow-sql` to turn it on.")
LABELS = {"csv": "CSV", "parquet": "Parquet", "votable": "VOTable", "fits": "FITS"}
T = TypeVar("T")
# Once the link is drawn, follow it: the browser saves the file (Content-Disposition).
FOLLOW_LINK = """function(children) {
    setTimeout(function() {
        var link = document.getElementById("sql-download-link");
        if (link) { link.click(); }
    }, 0);
    return window.dash_clientside.no_update;
}"""


@dataclass(frozen=True)
class Shown:
    """The first rows of one statement's result and how many rows it has in all."""

    frame: pl.DataFrame
    total: int


@contextmanager
def time_limit(cursor: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[None]:
    """Interrupt what `cursor` runs after `seconds` (from a timer thread); the interruption
    becomes a UserQueryError that says so."""
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        cursor.interrupt()

    timer = threading.Timer(seconds, interrupt)
    timer.start()
    try:
        yield
    except (duckdb.Error, UserQueryError, OSError) as exc:  # OSError: pyarrow's, mid-stream
        if fired.is_set():
            raise UserQueryError(f"the query ran longer than {seconds:g} s and was stopped "
                                 "(the server's limit per query)") from exc
        raise
    finally:
        timer.cancel()


def head_and_count(relation: duckdb.DuckDBPyRelation, max_rows: int) -> Shown:
    """The first `max_rows` rows and the row count, in one pass over the result (the rest is
    counted batch by batch, never held)."""
    reader = relation.to_arrow_reader(batch_size=max(1_024, min(max_rows, 100_000)))
    kept: list[pa.RecordBatch] = []
    held = total = 0
    for batch in reader:
        total += batch.num_rows
        if held < max_rows:
            kept.append(batch.slice(0, max_rows - held))
            held += kept[-1].num_rows
    table = pa.Table.from_batches(kept, schema=reader.schema)
    return Shown(pl.from_arrow(table), total)  # type: ignore[arg-type]


def run_guarded(ctx: PageContext, text: str, work: Callable[[duckdb.DuckDBPyConnection], T]
                ) -> T:
    """`work(cursor)` on a fresh cursor within the time limit; DuckDB's failures while the
    query runs are the query's (a UserQueryError), as in `xpipe sql`."""
    if not ctx.settings.allow_sql:
        raise UserQueryError(OFF)
    if not text or not text.strip():
        raise UserQueryError("the query is empty")
    with ctx.reader.cursor() as cursor, time_limit(cursor, ctx.settings.sql_time_limit_s):
        try:
            return work(cursor)
        except duckdb.Error as exc:
            raise UserQueryError(f"the query failed: {exc}") from exc


def run_query(ctx: PageContext, text: str) -> list[Shown]:
    """Every statement's first rows and row count."""
    return run_guarded(ctx, text, lambda cursor: [
        head_and_count(relation, ctx.settings.sql_max_rows)
        for relation in run_user_sql(cursor, text)])


def download(ctx: PageContext, text: str, fmt: str) -> Pending:
    """The whole result of a one-statement query written to a file on disk, as `xpipe sql
    --out` writes it (the provenance and the query in the format's metadata), waiting for
    its one fetch from `Pending.url`."""
    if fmt not in FORMATS:
        raise UserQueryError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return ctx.downloads.write(f"xpipe-query{FILE_SUFFIXES[fmt]}", lambda out: run_guarded(
        ctx, text, lambda cursor: write_relation(
            cursor, single_relation(cursor, text), out, settings=ctx.reader.settings,
            fmt=fmt, query=text)))


def download_link(ctx: PageContext, pending: Pending) -> Component:
    """The link the browser follows by itself (a clientside callback clicks it)."""
    minutes = ctx.settings.download_expiry_s / 60
    return html.P([html.A(pending.filename, href=pending.url, download=pending.filename,
                          id="sql-download-link"),
                   f" (the download starts by itself; the link works once, for "
                   f"{minutes:g} min)"], className="sql-download")


def validate(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> None:
    require_no_subpath(PATH, path_rest)


def layout(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> Component:
    if not ctx.settings.allow_sql:
        return html.Div([html.H1("SQL"), ui.message(OFF, error=False, id="sql-off")])
    limits = (f"Read-only: only statements that read run, as with xpipe sql. The table shows "
              f"the first {ctx.settings.sql_max_rows:,} rows; a query is stopped after "
              f"{ctx.settings.sql_time_limit_s:g} s; the download holds the whole result.")
    return html.Div([
        html.H1("SQL"),
        html.P(limits),
        dcc.Textarea(id="sql-query", value=query.get("q") or EXAMPLE,
                     style={"width": "100%", "height": "8em", "fontFamily": "monospace"}),
        html.Div([html.Button("run", id="sql-run"), html.Span("download the whole result:"),
                  *[html.Button(LABELS[fmt], id=f"sql-download-{fmt}") for fmt in FORMATS]],
                 className="xp-form"),
        html.Div(id="sql-result"),
        html.Div(id="sql-download"),
    ])


def result_view(results: list[Shown], seconds: float) -> list[Component]:
    parts: list[Component] = []
    for number, shown in enumerate(results, start=1):
        label = f"statement {number}: " if len(results) > 1 else ""
        parts += [html.P(f"{label}showing {shown.frame.height:,} of {shown.total:,} rows"
                         f" ({seconds:.2f} s)", className="sql-count"),
                  ui.data_table(shown.frame, id=f"sql-table-{number}")]
    return parts


def register_callbacks(app: dash.Dash, ctx: PageContext) -> None:
    @app.callback(Output("sql-result", "children"), Input("sql-run", "n_clicks"),
                  State("sql-query", "value"), prevent_initial_call=True)
    def run(_clicks: int | None, text: str | None) -> list[Component]:
        start = time.perf_counter()
        try:
            results = run_query(ctx, text or "")
        except UserQueryError as exc:
            return [ui.message(str(exc), id="sql-error")]
        return result_view(results, time.perf_counter() - start)

    @app.callback(Output("sql-download", "children"), Output("sql-result", "children",
                                                         allow_duplicate=True),
                  *[Input(f"sql-download-{fmt}", "n_clicks") for fmt in FORMATS],
                  State("sql-query", "value"), prevent_initial_call=True)
    def save(*args: Any) -> tuple[Any, Any]:
        text: str | None = args[-1]
        fmt = str(dash.ctx.triggered_id).removeprefix("sql-download-")
        try:
            return download_link(ctx, download(ctx, text or "", fmt)), dash.no_update
        except UserQueryError as exc:
            return None, [ui.message(str(exc), id="sql-error")]

    app.clientside_callback(FOLLOW_LINK, Output("sql-download", "title"),
                            Input("sql-download", "children"), prevent_initial_call=True)
