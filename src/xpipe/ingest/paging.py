"""meta.ingest_pages: the page manifest that makes service pulls resumable.

A page's rows and its manifest row are written in one transaction, so after a crash (or
SIGKILL) either both are there or neither is; a rerun skips the pages marked done and goes on
with the rest. A pull resumes only with the fingerprint it started with: resuming with another
schema, paging or contract would mix incompatible pages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import duckdb

from xpipe.warehouse.connection import drop_relation, scalar, table_exists
from xpipe.warehouse.contracts import SchemaError, load_schema

MANIFEST = "meta.ingest_pages"
TOTAL_PAGE = "*"


@dataclass(frozen=True)
class PageRecord:
    pull: str
    fingerprint: str
    page_id: str
    top_index: int
    status: str  # done | split | total
    rows: int | None = None
    expected_rows: int | None = None
    bounds: str | None = None
    dec_lo: float | None = None
    dec_hi: float | None = None
    ra_lo: float | None = None
    ra_hi: float | None = None
    row_lo: int | None = None
    row_hi: int | None = None
    checksum: str | None = None
    mode: str | None = None
    attempts: int | None = None
    seconds: float | None = None
    note: str | None = None


def fingerprint(**parts: object) -> str:
    """A short stable hash of what a pull's pages depend on."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def contract_signature(table: str) -> list[str]:
    """Column names and types of a contract: part of a pull's fingerprint."""
    return [f"{c.name}:{c.type}" for c in load_schema(table).columns]


def ensure_manifest(con: duckdb.DuckDBPyConnection) -> None:
    if not table_exists(con, MANIFEST):
        con.execute(load_schema(MANIFEST).ddl())


def load_pages(con: duckdb.DuckDBPyConnection, pull: str) -> dict[str, PageRecord]:
    fields = list(PageRecord.__dataclass_fields__)
    rows = con.execute(f"SELECT {', '.join(fields)} FROM {MANIFEST} WHERE pull = ?",
                       [pull]).fetchall()
    return {r[2]: PageRecord(**dict(zip(fields, r, strict=True))) for r in rows}


def stored_fingerprints(con: duckdb.DuckDBPyConnection, pull: str) -> set[str]:
    rows = con.execute(f"SELECT DISTINCT fingerprint FROM {MANIFEST} WHERE pull = ?",
                       [pull]).fetchall()
    return {r[0] for r in rows}


def record_page(con: duckdb.DuckDBPyConnection, record: PageRecord) -> None:
    """Insert or replace one page's manifest row (call inside the page's transaction)."""
    values = asdict(record)
    con.execute(f"DELETE FROM {MANIFEST} WHERE pull = ? AND page_id = ?",
                [record.pull, record.page_id])
    cols = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    con.execute(f"INSERT INTO {MANIFEST} ({cols}, landed_at) VALUES ({marks}, now())",
                list(values.values()))


def reset_pull(con: duckdb.DuckDBPyConnection, pull: str, pull_table: str) -> None:
    """Forget a pull: its manifest rows and its landed rows (call inside a transaction)."""
    con.execute(f"DELETE FROM {MANIFEST} WHERE pull = ?", [pull])
    drop_relation(con, pull_table)


def check_resumable(con: duckdb.DuckDBPyConnection, pull: str, fp: str, what: str) -> int:
    """Pages already done for this fingerprint; another fingerprint is an error."""
    stored = stored_fingerprints(con, pull)
    if stored and stored != {fp}:
        raise SchemaError(
            f"an unfinished {what} pull with other settings (schema, paging or table contract) "
            f"is in the warehouse; rerun with --refresh to start over")
    return int(scalar(con, f"SELECT count(*) FROM {MANIFEST} WHERE pull = ? AND status = "
                           "'done'", [pull]))
