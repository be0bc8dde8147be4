"""The DuckDB warehouse: connections with bounded resources, schemas, and atomic swaps.

Every writer builds its output in a staging table and swaps it in inside one transaction, so a
failed or interrupted step leaves what was already in the warehouse untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from xpipe.core.config import Settings
from xpipe.core.errors import WarehouseError
from xpipe.warehouse.contracts import create_table, relation_columns
from xpipe.warehouse.migrations import check_readable, migrate
from xpipe.warehouse.run_liveness import mark_interrupted, report_interrupted

SCHEMAS = ("raw", "model", "results", "meta")
META_TABLES = ("meta.runs",)



def connect(settings: Settings, read_only: bool = False, *, create: bool = False,
            config: Mapping[str, str | bool | int | float] | None = None
            ) -> duckdb.DuckDBPyConnection:
    """Open the warehouse. Only `create=True` (the commands that load or import) may make a new
    one; anything else refuses a missing file before creating a directory or a database.
    `config` adds DuckDB settings applied when the database opens (every cursor inherits them).

    Opening for writing also migrates an older layout and marks runs whose process is gone
    `interrupted`; opening read-only reports such runs (a warning) without writing."""
    path = settings.warehouse
    if (read_only or not create) and not path.exists():
        raise WarehouseError(f"no warehouse at {path}: run `xpipe warehouse` (or `make warehouse`)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Insertion order is never relied on (every output has explicit ids or ORDER BY), and
    # keeping it costs memory on large inserts.
    options: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": settings.memory_limit, "preserve_insertion_order": False}
    if settings.threads:
        options["threads"] = settings.threads
    options.update(config or {})
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=options)
    except duckdb.IOException as exc:
        raise WarehouseError(f"cannot open warehouse {path}: {exc}") from exc
    try:
        if read_only:
            check_readable(con, path)
            report_interrupted(con, path)
        else:
            temp = settings.resolved_temp_directory()
            temp.mkdir(parents=True, exist_ok=True)
            con.execute(f"SET temp_directory = '{_sql_str(str(temp))}'")
            migrate(con, path)  # before ensure_layout: an empty file is a new warehouse
            ensure_layout(con)
            mark_interrupted(con)
    except BaseException:
        con.close()
        raise
    return con


def connect_memory(settings: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse, for commands that work on files without touching the real one."""
    con = duckdb.connect(":memory:")
    if settings is not None:
        con.execute(f"SET memory_limit = '{settings.memory_limit}'")
    ensure_layout(con)
    return con


def ensure_layout(con: duckdb.DuckDBPyConnection) -> None:
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for table in META_TABLES:
        if not table_exists(con, table):
            create_table(con, table)


def table_exists(con: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Whether `schema.name` is a table or a view of the warehouse (every one has a column)."""
    return bool(relation_columns(con, qualified))


def require_tables(con: duckdb.DuckDBPyConnection, tables: list[str], hint: str) -> None:
    missing = [t for t in tables if not table_exists(con, t)]
    if missing:
        raise WarehouseError(f"warehouse lacks {', '.join(missing)}: {hint}")


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All or nothing: any exception (Ctrl-C included) rolls every change back."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextmanager
def cleaned_up(cleanup: Callable[[], object]) -> Iterator[None]:
    """Run `cleanup` (a RESET, DROP or unregister) after the block, whether or not it failed.

    A failed statement aborts the transaction, which then refuses every statement until the
    caller rolls back: after a failure the cleanup is only tried, so that the error reported is
    the block's own, never "Current transaction is aborted". (What it would have undone then
    stays on this connection: a setting, a registered view; the rollback drops the tables.)
    """
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cleanup()
        raise
    cleanup()


@contextmanager
def session_setting(con: duckdb.DuckDBPyConnection, setting: str, value: str) -> Iterator[None]:
    """`SET setting = value` (SQL text) for the block, then RESET (see `cleaned_up`)."""
    con.execute(f"SET {setting} = {value}")
    with cleaned_up(lambda: con.execute(f"RESET {setting}")):
        yield


def staging_name(qualified: str) -> str:
    schema, name = qualified.split(".")
    return f"{schema}.{name}__staging"


def drop_relation(con: duckdb.DuckDBPyConnection, qualified: str) -> None:
    """Drop a table or a view of that name (DuckDB refuses DROP VIEW on a table)."""
    schema, name = qualified.split(".")
    kinds = con.execute(
        "SELECT 'TABLE' FROM duckdb_tables() WHERE schema_name = ? AND table_name = ? "
        "UNION ALL SELECT 'VIEW' FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
        [schema, name, schema, name],
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f"DROP {kind} {qualified}")


def swap_in(con: duckdb.DuckDBPyConnection, qualified: str) -> None:
    """Replace `qualified` by its staging table; call inside a transaction."""
    _, name = qualified.split(".")
    drop_relation(con, qualified)
    con.execute(f"ALTER TABLE {staging_name(qualified)} RENAME TO {name}")


def _sql_str(value: str) -> str:
    return value.replace("'", "''")


def sql_literal(value: str | Path) -> str:
    return "'" + _sql_str(str(value)) + "'"


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Append a Polars frame to `table` by column name (the table has its contract's types)."""
    con.register("__frame", frame.to_arrow())
    with cleaned_up(lambda: con.unregister("__frame")):
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM __frame")


def first_row(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None
              ) -> tuple[Any, ...] | None:
    """The first row of a query, read to the end (DuckDB 2 keeps unfinished results open)."""
    rows = con.execute(query, params).fetchall() if params else con.execute(query).fetchall()
    return rows[0] if rows else None


def only_row(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None
             ) -> tuple[Any, ...]:
    """The row of a query that always returns one (an aggregate, a lookup known to match)."""
    row = first_row(con, query, params)
    if row is None:
        raise WarehouseError(f"query returned no row: {query}")
    return row


def scalar(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> Any:
    return only_row(con, query, params)[0]
