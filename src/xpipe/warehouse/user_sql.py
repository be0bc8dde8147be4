"""Running the user's own SQL on the warehouse, read-only for real.

Opening the database read-only is not enough: DuckDB statements can also write files (COPY,
EXPORT DATABASE), attach other databases read-write, install or load extensions, or change
settings such as the profiler's output file. So every surface that runs user SQL goes through
`open_guarded` and `run_user_sql`: DuckDB's own parser splits the text into statements and
reports each one's type, only statements that read are accepted (before anything runs), and
the connection's configuration is locked so that a query cannot loosen it. Reading the user's
own files (`read_csv('mine.csv')`) stays allowed: it is a legitimate use of a local tool.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import duckdb

from xpipe.core.config import Settings
from xpipe.core.errors import UserQueryError, WarehouseError
from xpipe.warehouse.connection import connect
from xpipe.warehouse.file_formats import format_for, write_result
from xpipe.warehouse.provenance import file_provenance

# Settings applied before the lock: no extension is installed or loaded on a query's behalf, and
# Python objects in scope are not scanned as tables.
GUARD_SETTINGS = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,
}

# PRAGMAs that only read (catalogue listings, sizes, versions).
READ_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "show_databases",
    "database_list", "database_size", "storage_info", "metadata_info", "version",
    "platform", "functions", "user_agent", "collations",
})

_PRAGMA_NAME = re.compile(r"\s*PRAGMA\s+([A-Za-z_][A-Za-z_0-9]*)", re.IGNORECASE)
# EXPLAIN [ANALYZE] [(options)] <statement>: what follows is checked like any statement,
# since EXPLAIN ANALYZE runs it.
_EXPLAIN_PREFIX = re.compile(r"\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^()]*\)\s*)?",
                             re.IGNORECASE)


def _refusal(number: int, kind: str, why: str = "") -> UserQueryError:
    reason = f" ({why})" if why else ""
    return UserQueryError(
        f"statement {number} is {kind}{reason}: `xpipe sql` is read-only and runs only "
        "statements that read (SELECT, WITH, VALUES, FROM, SUMMARIZE, DESCRIBE, SHOW, "
        "EXPLAIN of a read, and read-only PRAGMAs such as table_info); nothing was run")


def _statement_kind(statement: duckdb.Statement) -> str:
    try:
        return statement.type.name
    except ValueError:  # a statement type the Python binding cannot name (UPDATE EXTENSIONS)
        return "a statement of unknown type"


def _parse(con: duckdb.DuckDBPyConnection, text: str) -> list[duckdb.Statement]:
    try:
        return con.extract_statements(text)
    except duckdb.Error as exc:
        raise UserQueryError(f"cannot parse the query: {exc}") from exc


def _check_statement(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement,
                     number: int) -> None:
    kind = _statement_kind(statement)
    if kind == "SELECT":
        return
    if kind == "PRAGMA":
        match = _PRAGMA_NAME.match(statement.query)
        name = match.group(1).lower() if match else ""
        if name not in READ_PRAGMAS:
            raise _refusal(number, f"PRAGMA {name}" if name else "a PRAGMA-type statement",
                           "it is not one of the PRAGMAs that only read")
        return
    if kind == "EXPLAIN":
        match = _EXPLAIN_PREFIX.match(statement.query)
        inner = _parse(con, statement.query[match.end():]) if match else []
        if len(inner) != 1:
            raise _refusal(number, "EXPLAIN", "its statement could not be isolated")
        try:
            _check_statement(con, inner[0], number)
        except UserQueryError as exc:
            raise _refusal(number, f"EXPLAIN of {_statement_kind(inner[0])}",
                           "EXPLAIN ANALYZE runs the statement it explains") from exc
        return
    if kind == "MULTI":
        raise _refusal(number, "a statement that DuckDB runs as several (a PIVOT without an "
                       "IN list creates a type)", "list the pivot values: ON col IN (...)")
    raise _refusal(number, kind)


def read_statements(con: duckdb.DuckDBPyConnection, text: str) -> list[duckdb.Statement]:
    """The statements of `text`, each checked to only read; refuses the whole text otherwise."""
    statements = _parse(con, text)
    if not statements:
        raise UserQueryError("the query is empty")
    for number, statement in enumerate(statements, start=1):
        _check_statement(con, statement, number)
    return statements


def guard_config(settings: Settings) -> dict[str, str | bool]:
    """GUARD_SETTINGS, a spill directory outside the warehouse's own name, and the lock that
    keeps any query from changing them, applied when the database opens so that every cursor
    of the connection has them (a server runs each request on its own cursor)."""
    return {**GUARD_SETTINGS, "temp_directory": str(settings.resolved_temp_directory()),
            "lock_configuration": True}


def connect_guarded(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only, locked connection to the warehouse for running user SQL; the caller
    closes it."""
    if not settings.warehouse.exists():
        raise WarehouseError(f"no warehouse at {settings.warehouse}: run `xpipe warehouse` "
                             "(or `make warehouse`)")
    return connect(settings, read_only=True, config=guard_config(settings))


@contextmanager
def open_guarded(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect_guarded` for the length of a block."""
    con = connect_guarded(settings)
    try:
        yield con
    finally:
        con.close()


def run_user_sql(con: duckdb.DuckDBPyConnection, text: str) -> list[duckdb.DuckDBPyRelation]:
    """Check every statement of `text` first, then run them; one relation per statement.

    `con` must come from `connect_guarded` (or one of its cursors).
    """
    statements = read_statements(con, text)
    relations = []
    for statement in statements:
        try:
            relation = con.sql(statement)
        except duckdb.Error as exc:
            raise UserQueryError(f"the query failed: {exc}") from exc
        if relation is None:  # only statements without results return None, and none pass
            raise UserQueryError("the statement returned no result")
        relations.append(relation)
    return relations


def single_relation(con: duckdb.DuckDBPyConnection, text: str) -> duckdb.DuckDBPyRelation:
    """The result of a text that must hold exactly one (reading) statement."""
    relations = run_user_sql(con, text)
    if len(relations) != 1:
        raise UserQueryError(f"the query holds {len(relations)} statements; writing a result "
                             "needs exactly one")
    return relations[0]


def _is_duckdb_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(12)[8:12] == b"DUCK"
    except OSError:
        return False


def check_out_path(out: Path, settings: Settings) -> None:
    """Refuse an output path that is the warehouse, its WAL, any existing DuckDB database, or
    not a regular file (renaming the finished file onto /dev/stdout would replace it)."""
    if out.exists() and out.is_dir():
        raise UserQueryError(f"--out {out} is a directory; expected a file path")
    if out.exists() and not out.is_file():  # the file is written beside it, then renamed
        raise UserQueryError(f"--out {out} is not a regular file (a device, pipe or socket, "
                             "e.g. /dev/stdout); expected a file path")
    warehouse = settings.warehouse
    wal = warehouse.with_name(warehouse.name + ".wal")
    for protected in (warehouse, wal):
        if protected.exists() and out.exists() and out.samefile(protected):
            raise UserQueryError(f"--out {out} is the warehouse ({protected}); write elsewhere")
    if _is_duckdb_file(out):
        raise UserQueryError(f"--out {out} is a DuckDB database; `xpipe sql` never overwrites "
                             "one: write elsewhere")


def write_relation(con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, out: Path,
                   *, settings: Settings, fmt: str | None, query: str) -> None:
    """Write a result to `out` (format `fmt`, else from its suffix) with the warehouse's
    provenance and the query; the path and the query are never pasted into SQL."""
    fmt = format_for(out, fmt)
    check_out_path(out, settings)
    provenance = replace(file_provenance(con), query=query)
    try:
        write_result(con, relation, out, fmt, provenance, chunk_rows=settings.chunk_rows)
    except duckdb.Error as exc:
        raise UserQueryError(f"cannot write {out}: {exc}") from exc
