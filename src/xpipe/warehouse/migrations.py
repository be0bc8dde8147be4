"""Warehouse layout versions, so a warehouse made by an older xpipe keeps working.

Each migration takes a warehouse from version v to v + 1 and says what it changed; they run in
order, in one transaction, when a warehouse is opened for writing, and every step is recorded in
meta.schema_version. Version 1 is a warehouse from before versions were recorded.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from xpipe import __version__
from xpipe.core.errors import WarehouseError
from xpipe.warehouse.contracts import create_table, relation_columns

VERSION_TABLE = "meta.schema_version"
UNVERSIONED = 1  # warehouses written before meta.schema_version existed


def _nothing_to_change(con: duckdb.DuckDBPyConnection) -> str:
    return "layout unchanged: tables as written before versions were recorded"


def _runs_process(con: duckdb.DuckDBPyConnection) -> str:
    if _has_table(con, "meta", "runs"):
        for column, kind in (("pid", "INTEGER"), ("host", "VARCHAR")):
            con.execute(f"ALTER TABLE meta.runs ADD COLUMN IF NOT EXISTS {column} {kind}")
    return "meta.runs: pid and host of each run (NULL for earlier runs), to find killed runs"


def _detections_match_type(con: duckdb.DuckDBPyConnection) -> str:
    if _has_table(con, "raw", "detections"):
        con.execute("ALTER TABLE raw.detections ADD COLUMN IF NOT EXISTS match_type VARCHAR")
    return ("raw.detections: match_type of the master-stack association (NULL for rows loaded "
            "before)")


# The CSC confidence limits added in layout 5, as they were then (a migration never changes).
LIMIT_COLUMNS_V5 = ("hard_hm_lolim", "hard_hm_hilim", "hard_hs_lolim", "hard_hs_hilim",
                    "hard_ms_lolim", "hard_ms_hilim", "powlaw_gamma_lolim", "powlaw_gamma_hilim",
                    "bb_kt_lolim", "bb_kt_hilim")


def _detections_confidence_limits(con: duckdb.DuckDBPyConnection) -> str:
    if _has_table(con, "raw", "detections"):
        for column in LIMIT_COLUMNS_V5:
            con.execute(f"ALTER TABLE raw.detections ADD COLUMN IF NOT EXISTS {column} DOUBLE")
    return ("raw.detections: the CSC confidence limits of the hardness ratios and spectral fits "
            "(NULL for rows loaded before)")


# version v → the step to v + 1 (it returns a note saying what it changed)
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], str]] = {
    1: _nothing_to_change,
    2: _runs_process,
    3: _detections_match_type,
    4: _detections_confidence_limits,
}
CURRENT = UNVERSIONED + len(MIGRATIONS)


def _has_table(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(relation_columns(con, f"{schema}.{table}"))


def stored_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The warehouse's layout version; None for a new, empty warehouse."""
    if _has_table(con, "meta", "schema_version"):
        return int(con.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchall()[0][0])
    holds_data = con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name IN "
                             "('raw', 'model', 'results', 'meta')").fetchall()[0][0]
    return UNVERSIONED if holds_data else None


def check_readable(con: duckdb.DuckDBPyConnection, path: object) -> None:
    """Refuse a warehouse written by a newer xpipe (its layout may mean something else)."""
    version = stored_version(con)
    if version is not None and version > CURRENT:
        raise WarehouseError(f"warehouse {path} has layout version {version}; this xpipe "
                             f"({__version__}) reads up to version {CURRENT}: upgrade xpipe")


def _record(con: duckdb.DuckDBPyConnection, version: int, note: str) -> None:
    con.execute(f"INSERT INTO {VERSION_TABLE} VALUES (?, now(), ?, ?)",
                [version, __version__, note])


def migrate(con: duckdb.DuckDBPyConnection, path: object) -> list[int]:
    """Bring a writable warehouse to CURRENT; returns the versions it passed through."""
    check_readable(con, path)
    version = stored_version(con)
    if version == CURRENT:
        return []
    con.execute("BEGIN TRANSACTION")
    try:
        if not _has_table(con, "meta", "schema_version"):
            con.execute("CREATE SCHEMA IF NOT EXISTS meta")
            create_table(con, VERSION_TABLE)
        if version is None:  # a new warehouse starts at the current layout
            _record(con, CURRENT, "new warehouse")
            con.execute("COMMIT")
            return [CURRENT]
        passed = []
        for step in range(version, CURRENT):
            _record(con, step + 1, MIGRATIONS[step](con))
            passed.append(step + 1)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return passed
