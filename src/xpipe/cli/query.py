"""Looking into the warehouse: `sql` (the user's read-only statements) and `dag`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import duckdb

from xpipe.cli.common import settings_from
from xpipe.core.errors import UserQueryError
from xpipe.warehouse.file_formats import FORMATS


@contextmanager
def query_failures() -> Iterator[None]:
    """DuckDB failing while the user's query runs (a conversion, `error()`) is the query's
    failure, shown as one line like a refusal; what caused it stays attached."""
    try:
        yield
    except duckdb.Error as exc:
        raise UserQueryError(str(exc)) from exc


@click.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", *FORMATS]), default=None,
              help="table (shown) or csv (standard output) without --out; with --out, csv, "
                   "parquet, votable or fits [default: from the suffix of --out: .parquet/.pq, "
                   ".vot/.xml/.votable, .fits/.fit, CSV otherwise].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write to this file instead of standard output; Parquet, VOTable and FITS "
                   "files carry the provenance (xpipe version, classification run, model "
                   "version and hash, the query).")
@click.option("--max-rows", type=int, default=40, show_default=True,
              help="Rows shown by --format table.")
@click.pass_context
def sql(ctx: click.Context, query: str, *, fmt: str | None, out: Path | None,
        max_rows: int) -> None:
    """Run read-only statements on the warehouse (anything that would write is refused)."""
    from xpipe.warehouse.user_sql import open_guarded, run_user_sql, single_relation, write_relation

    if fmt not in (None, "table", "csv") and out is None:
        raise click.UsageError(f"--format {fmt} needs --out FILE")
    settings = settings_from(ctx)
    with open_guarded(settings) as con, query_failures():
        if out is not None:
            write_relation(con, single_relation(con, query), out, settings=settings,
                           fmt=None if fmt == "table" else fmt, query=query)
            click.echo(f"wrote {out}")
        elif fmt == "csv":
            write_csv_stdout(single_relation(con, query))
        else:
            for relation in run_user_sql(con, query):
                relation.show(max_rows=max_rows, max_width=200)


def write_csv_stdout(relation: duckdb.DuckDBPyRelation) -> None:
    """Stream a result to standard output as CSV, batch by batch."""
    import pyarrow.csv as pacsv

    reader = relation.to_arrow_reader()
    with pacsv.CSVWriter(sys.stdout.buffer, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


@click.command("dag")
def dag() -> None:
    """List the SQL models: table, layer, materialization and grain."""
    from xpipe.warehouse.sql_models import describe_models

    click.echo(describe_models())
