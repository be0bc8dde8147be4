"""`xpipe crossmatch`: each master source's best SIMBAD match through SIMBAD's TAP service.

Master positions (the position of each source's first detection, as the offline cross-match
uses) go up with TAP_UPLOAD in chunks of at most 200,000 rows; the service returns every
`basic` object within the radius, validated against schemas/raw.simbad.yaml, and the closest
one (ties: smallest main_id) is kept per source, validated against raw.simbad_match. Chunks are
resumable like the CSC pull: a chunk's matches and its meta.ingest_pages row land together,
and a chunk the service truncates (OVERFLOW) is split in two. When every chunk is done,
raw.simbad_match is replaced in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import duckdb
import pyarrow as pa

from xpipe.core.progress import progress_bar
from xpipe.ingest.files import append_input, create_staging, open_arrow
from xpipe.ingest.paging import (
    PageRecord,
    contract_signature,
    ensure_manifest,
    fingerprint,
    load_pages,
    record_page,
    reset_pull,
    stored_fingerprints,
)
from xpipe.services.simbad import UPLOAD_NAME, SimbadConfig, candidates_query, upload_table
from xpipe.services.tap import Overflow, ServiceError, TapClient, TapResult
from xpipe.warehouse.connection import require_tables, scalar, staging_name, swap_in, transaction
from xpipe.warehouse.contracts import SchemaError, load_schema, resolve_columns
from xpipe.warehouse.provenance import recorded_run

PULL = "simbad"
MATCH_TABLE = "raw.simbad_match"
PULL_TABLE = "raw.simbad_match__pull"
SOURCES = "__xmatch_sources"
SYNC_UPLOAD_ROWS = 5_000  # smaller chunks run as sync queries, larger ones as async jobs
MAX_CHUNKS = 100_000


class CandidateSource(Protocol):
    def candidates(self, upload: pa.Table, mode: str) -> TapResult: ...


@dataclass
class SimbadSource:
    config: SimbadConfig
    client: TapClient

    def candidates(self, upload: pa.Table, mode: str) -> TapResult:
        return self.client.query(candidates_query(self.config.table, self.config.radius_arcsec),
                                 mode=mode, uploads={UPLOAD_NAME: upload_table(upload)})


@dataclass(frozen=True)
class Chunk:
    page_id: str
    top_index: int
    lo: int  # first source, 0-based in name order
    hi: int  # one past the last

    def children(self) -> tuple[Chunk, Chunk]:
        if self.hi - self.lo < 2:
            raise ServiceError(f"cross-match chunk {self.page_id} holds one source and is "
                               "still truncated by the service")
        mid = (self.lo + self.hi) // 2
        return (Chunk(f"{self.page_id}.0", self.top_index, self.lo, mid),
                Chunk(f"{self.page_id}.1", self.top_index, mid, self.hi))


def stage_sources(con: duckdb.DuckDBPyConnection) -> int:
    """Master positions in name order, numbered from 0, in a temporary table."""
    require_tables(con, ["raw.detections"], "run `xpipe warehouse` first")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {SOURCES} AS
        SELECT row_number() OVER (ORDER BY name) - 1 AS i, name, ra, dec FROM (
            SELECT name, arg_min(ra, det_id) AS ra, arg_min(dec, det_id) AS dec
            FROM raw.detections GROUP BY name)
    """)
    return int(scalar(con, f"SELECT count(*) FROM {SOURCES}"))


def sources_digest(con: duckdb.DuckDBPyConnection) -> str:
    return str(scalar(con, f"SELECT md5(coalesce(string_agg(name || '|' || CAST(ra AS VARCHAR) "
                           f"|| '|' || CAST(dec AS VARCHAR), '\n' ORDER BY i), '')) "
                           f"FROM {SOURCES}"))


def xmatch_fingerprint(config: SimbadConfig, digest: str) -> str:
    return fingerprint(sources=digest, radius=config.radius_arcsec, table=config.table,
                       chunk_rows=config.chunk_rows, contract=contract_signature(MATCH_TABLE))


def top_chunks(n_sources: int, chunk_rows: int) -> list[Chunk]:
    return [Chunk(f"{k:05d}", k, lo, min(n_sources, lo + chunk_rows))
            for k, lo in enumerate(range(0, n_sources, chunk_rows))]


def ensure_pull_table(con: duckdb.DuckDBPyConnection) -> None:
    cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in load_schema(MATCH_TABLE).columns)
    con.execute(f"CREATE TABLE IF NOT EXISTS {PULL_TABLE} (\n  page_id VARCHAR NOT NULL,\n  "
                f"{cols}\n)")


def validate_candidates(con: duckdb.DuckDBPyConnection, table: pa.Table, origin: str) -> None:
    """The service's columns and values meet raw.simbad's contract (and a name per row)."""
    if "name" not in {c.lower() for c in table.column_names}:
        raise SchemaError(f"{origin}: the answer lacks the uploaded source name; columns "
                          f"found: {', '.join(table.column_names)}")
    if table.num_rows == 0:
        resolve_columns(load_schema("raw.simbad"), table.column_names, origin)
        return
    staged = create_staging(con, "raw.simbad")
    try:
        append_input(con, "raw.simbad", open_arrow(con, table, origin, "__xm_candidates"))
    finally:
        con.unregister("__xm_candidates")
        con.execute(f"DROP TABLE IF EXISTS {staged}")


def best_matches(con: duckdb.DuckDBPyConnection, table: pa.Table, radius_arcsec: float
                 ) -> pa.Table:
    """Closest candidate per source within the radius (haversine, like the offline match)."""
    con.register("__xm_raw", table)
    try:
        return con.sql("""
            WITH c AS (
                SELECT name, main_id, otype, degrees(2 * asin(sqrt(
                    pow(sin(radians(c.dec - s.dec) / 2), 2)
                    + cos(radians(s.dec)) * cos(radians(c.dec))
                      * pow(sin(radians(c.ra - s.ra) / 2), 2)))) * 3600.0 AS sep
                FROM __xm_raw AS c JOIN __xmatch_sources AS s USING (name)
            )
            SELECT name, arg_min(main_id, (sep, main_id)) AS main_id,
                   arg_min(otype, (sep, main_id)) AS otype, min(sep) AS separation_arcsec
            FROM c WHERE sep <= ? GROUP BY name ORDER BY name
        """, params=[radius_arcsec]).to_arrow_table()
    finally:
        con.unregister("__xm_raw")


def land_chunk(con: duckdb.DuckDBPyConnection, config: SimbadConfig, fp: str, chunk: Chunk,
               result: TapResult) -> PageRecord:
    origin = f"SIMBAD TAP cross-match chunk {chunk.page_id} (sources {chunk.lo}-{chunk.hi - 1})"
    names = [c.name for c in load_schema(MATCH_TABLE).columns]
    cols = ", ".join(f'"{c}"' for c in names)
    with transaction(con):
        validate_candidates(con, result.table, origin)
        best = best_matches(con, result.table, config.radius_arcsec)
        rows = 0
        if best.num_rows:
            staged = create_staging(con, MATCH_TABLE)
            try:
                rows = append_input(con, MATCH_TABLE, open_arrow(con, best, origin, "__xm_best"))
            finally:
                con.unregister("__xm_best")
            con.execute(f"INSERT INTO {PULL_TABLE} (page_id, {cols}) SELECT ?, {cols} "
                        f"FROM {staged}", [chunk.page_id])
            con.execute(f"DROP TABLE {staged}")
        record = PageRecord(
            pull=PULL, fingerprint=fp, page_id=chunk.page_id, top_index=chunk.top_index,
            status="done", rows=rows, expected_rows=result.table.num_rows,
            bounds=f"sources [{chunk.lo}, {chunk.hi})", row_lo=chunk.lo, row_hi=chunk.hi,
            mode=result.mode, attempts=result.attempts, seconds=round(result.seconds, 3),
            note=f"{result.table.num_rows} candidates within the radius")
        record_page(con, record)
    return record


def process_chunk(con: duckdb.DuckDBPyConnection, config: SimbadConfig, fp: str,
                  source: CandidateSource, chunk: Chunk) -> PageRecord:
    upload = con.sql(f"SELECT name, ra, dec FROM {SOURCES} WHERE i >= ? AND i < ? ORDER BY i",
                     params=[chunk.lo, chunk.hi]).to_arrow_table()
    mode = "sync" if upload.num_rows <= SYNC_UPLOAD_ROWS else "async"
    try:
        result = source.candidates(upload, mode)
    except Overflow as exc:
        chunk.children()  # fails clearly if it cannot be split
        record = PageRecord(pull=PULL, fingerprint=fp, page_id=chunk.page_id,
                            top_index=chunk.top_index, status="split",
                            bounds=f"sources [{chunk.lo}, {chunk.hi})", row_lo=chunk.lo,
                            row_hi=chunk.hi, note=f"service reported OVERFLOW ({exc})")
        with transaction(con):
            record_page(con, record)
        return record
    return land_chunk(con, config, fp, chunk, result)


def walk_chunks(roots: list[Chunk], known: dict[str, PageRecord],
                visit: Callable[[Chunk], PageRecord]) -> Iterator[tuple[Chunk, PageRecord, bool]]:
    stack = list(reversed(roots))
    for _ in range(MAX_CHUNKS):
        if not stack:
            return
        chunk = stack.pop()
        record = known.get(chunk.page_id)
        fresh = record is None
        if record is None:
            record = visit(chunk)
        if record.status == "split":
            stack.extend(reversed(chunk.children()))
        yield chunk, record, fresh
    raise ServiceError(f"more than {MAX_CHUNKS:,} cross-match chunks; stopping")


def crossmatch(con: duckdb.DuckDBPyConnection, config: SimbadConfig,
               source: CandidateSource | None = None, refresh: bool = False,
               echo: Callable[[str], None] = print) -> dict[str, int]:
    """Match every master source, resuming finished chunks, then swap raw.simbad_match in."""
    source = source or SimbadSource(config, config.client(log=echo))
    params = {"tap_url": config.url, "table": config.table,
              "radius_arcsec": config.radius_arcsec, "chunk_rows": config.chunk_rows,
              "refresh": refresh}
    with recorded_run(con, "crossmatch", params) as run:
        ensure_manifest(con)
        n_sources = stage_sources(con)
        fp = xmatch_fingerprint(config, sources_digest(con))
        stored = stored_fingerprints(con, PULL)
        if refresh or (stored and stored != {fp}):
            if stored and not refresh:
                echo("sources, radius or chunking changed since the last cross-match: "
                     "starting it over")
            with transaction(con):
                reset_pull(con, PULL, PULL_TABLE)
        ensure_pull_table(con)
        known = load_pages(con, PULL)
        done = sum(1 for p in known.values() if p.status == "done")
        if done:
            echo(f"resuming the cross-match: {done} chunks already in the warehouse")
        counts = {"chunks": 0, "chunks_split": 0, "candidates": 0}
        with run.stage("query"), progress_bar("SIMBAD cross-match", total=n_sources,
                                              unit="sources") as bar:
            for chunk, record, fresh in walk_chunks(
                    top_chunks(n_sources, config.chunk_rows), known,
                    lambda c: process_chunk(con, config, fp, source, c)):
                if record.status == "split":
                    counts["chunks_split"] += 1
                    continue
                counts["chunks"] += 1
                counts["candidates"] += int(record.expected_rows or 0)
                bar.update(chunk.hi - chunk.lo)
                if not fresh:
                    bar.set_postfix(resumed=True, refresh=False)
        for key, value in counts.items():
            run.count(key, value)
        run.count("sources", n_sources)
        with run.stage("build"), transaction(con):
            run.count("matched_sources", stage_matches(con))
            swap_in(con, MATCH_TABLE)
    return run.row_counts


def stage_matches(con: duckdb.DuckDBPyConnection) -> int:
    names = [c.name for c in load_schema(MATCH_TABLE).columns]
    cols = ", ".join(f'"{c}"' for c in names)
    staged = staging_name(MATCH_TABLE)
    con.execute(f"DROP TABLE IF EXISTS {staged}")
    con.execute(load_schema(MATCH_TABLE).ddl(staged))
    con.execute(f"INSERT INTO {staged} (source_file, source_row, {cols}) "
                f"SELECT 'simbad-tap', NULL, {cols} FROM {PULL_TABLE} ORDER BY name")
    dup = scalar(con, f"SELECT count(*) - count(DISTINCT name) FROM {staged}")
    if dup:
        raise SchemaError(f"{dup} sources have two cross-match rows; rerun with --refresh")
    return int(scalar(con, f"SELECT count(*) FROM {staged}"))

