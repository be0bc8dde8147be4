"""`xpipe crossmatch`: each master source's best SIMBAD match through SIMBAD's TAP service.

Master positions (the position of each source's first detection, as the offline cross-match
uses; detections with a physically impossible value, see sql/seeds/physical_ranges.csv, are left
out) go up with TAP_UPLOAD in chunks of at most 200,000 rows; the service returns every `basic`
object within the radius, validated against schemas/raw.simbad.yaml, and the closest
one (ties: smallest main_id) is kept per source, validated against raw.simbad_match. Chunks are
resumable by the same `paging.ResumablePull` as the CSC pull: a chunk's matches and its
meta.ingest_pages row land together, and a chunk the service truncates (OVERFLOW) is split in
two. When every chunk is done, raw.simbad_match is replaced in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import duckdb
import pyarrow as pa

from xpipe.ingest.files import append_input, create_staging, open_arrow
from xpipe.ingest.paging import (
    PageRecord,
    Progress,
    PullSpec,
    ResumablePull,
    Unit,
    contract_signature,
    count_rows,
    fingerprint,
    quoted,
)
from xpipe.services.simbad import UPLOAD_NAME, SimbadConfig, candidates_query, upload_table
from xpipe.services.tap import Overflow, ServiceError, TapClient, TapResult
from xpipe.warehouse.connection import (
    cleaned_up,
    require_tables,
    scalar,
    swap_in,
    transaction,
)
from xpipe.warehouse.contracts import SchemaError, load_schema, resolve_columns
from xpipe.warehouse.provenance import recorded_run
from xpipe.warehouse.sql_models import physically_possible

PULL = "simbad"
MATCH_TABLE = "raw.simbad_match"
PULL_TABLE = "raw.simbad_match__pull"
SOURCES = "__xmatch_sources"
SYNC_UPLOAD_ROWS = 5_000  # smaller chunks run as sync queries, larger ones as async jobs
MAX_CHUNKS = 100_000
XMATCH = PullSpec(pull=PULL, contract=MATCH_TABLE, pull_table=PULL_TABLE,
                  unit_columns=("page_id",), what="cross-match", noun="chunk",
                  settings="sources, radius or chunking", on_change="restart",
                  max_units=MAX_CHUNKS)


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
class Chunk(Unit):
    """Uploaded sources lo … hi - 1 (0-based, in name order)."""

    lo: int
    hi: int

    def children(self) -> tuple[Chunk, Chunk]:
        if self.hi - self.lo < 2:
            raise ServiceError(f"cross-match chunk {self.page_id} holds one source and is "
                               "still truncated by the service")
        mid = (self.lo + self.hi) // 2
        id_a, id_b = self.halves()
        return (Chunk(id_a, self.top_index, self.lo, mid),
                Chunk(id_b, self.top_index, mid, self.hi))

    def located(self, record: PageRecord) -> PageRecord:
        return replace(record, bounds=f"sources [{self.lo}, {self.hi})", row_lo=self.lo,
                       row_hi=self.hi)


def chunk_sources(record: PageRecord) -> int:
    """Sources of a done chunk: what it adds to the progress bar."""
    return int(record.row_hi or 0) - int(record.row_lo or 0)


def stage_sources(con: duckdb.DuckDBPyConnection) -> int:
    """Master positions in name order, numbered from 0, in a temporary table: as the offline
    match, each source's first detection without a physically impossible value."""
    require_tables(con, ["raw.detections"], "run `xpipe warehouse` first")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {SOURCES} AS
        SELECT row_number() OVER (ORDER BY name) - 1 AS i, name, ra, dec FROM (
            SELECT name, arg_min(ra, det_id) AS ra, arg_min(dec, det_id) AS dec
            FROM raw.detections WHERE {physically_possible()} GROUP BY name)
    """)
    return count_rows(con, f"SELECT count(*) FROM {SOURCES}")


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


def validate_candidates(con: duckdb.DuckDBPyConnection, table: pa.Table, origin: str) -> None:
    """The service's columns and values meet raw.simbad's contract (and a name per row)."""
    if "name" not in {c.lower() for c in table.column_names}:
        raise SchemaError(f"{origin}: the answer lacks the uploaded source name; columns "
                          f"found: {', '.join(table.column_names)}")
    if table.num_rows == 0:
        resolve_columns(load_schema("raw.simbad"), table.column_names, origin)
        return
    with transaction(con):  # the staging table is only a check: nothing of it stays
        staged = create_staging(con, "raw.simbad")

        def drop_candidates() -> None:
            con.unregister("__xm_candidates")
            con.execute(f"DROP TABLE IF EXISTS {staged}")

        with cleaned_up(drop_candidates):
            append_input(con, "raw.simbad", open_arrow(con, table, origin, "__xm_candidates"))


def best_matches(con: duckdb.DuckDBPyConnection, table: pa.Table, radius_arcsec: float
                 ) -> pa.Table:
    """Closest candidate per source within the radius (haversine, like the offline match)."""
    con.register("__xm_raw", table)
    with cleaned_up(lambda: con.unregister("__xm_raw")):
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


def process_chunk(pull: ResumablePull, chunk: Chunk, *, config: SimbadConfig,
                  source: CandidateSource) -> PageRecord:
    """Upload one chunk's positions and land its best matches, or record that it must be
    split."""
    con = pull.con
    upload = con.sql(f"SELECT name, ra, dec FROM {SOURCES} WHERE i >= ? AND i < ? ORDER BY i",
                     params=[chunk.lo, chunk.hi]).to_arrow_table()
    mode = "sync" if upload.num_rows <= SYNC_UPLOAD_ROWS else "async"
    try:
        result = source.candidates(upload, mode)
    except Overflow as exc:
        return pull.split(chunk, note=f"service reported OVERFLOW ({exc})")
    origin = f"SIMBAD TAP cross-match chunk {chunk.page_id} (sources {chunk.lo}-{chunk.hi - 1})"
    candidates = result.table
    validate_candidates(con, candidates, origin)
    return pull.land(chunk, best_matches(con, candidates, config.radius_arcsec),
                     origin=origin, result=result, expected_rows=candidates.num_rows,
                     note=f"{candidates.num_rows} candidates within the radius")


def crossmatch(con: duckdb.DuckDBPyConnection, config: SimbadConfig, *,
               source: CandidateSource | None = None, refresh: bool = False,
               echo: Callable[[str], None] = print) -> dict[str, int]:
    """Match every master source, resuming finished chunks, then swap raw.simbad_match in."""
    source = source or SimbadSource(config, config.client(log=echo))
    params = {"tap_url": config.url, "table": config.table,
              "radius_arcsec": config.radius_arcsec, "chunk_rows": config.chunk_rows,
              "refresh": refresh}
    with recorded_run(con, "crossmatch", params) as run:
        n_sources = stage_sources(con)
        pull = ResumablePull(con, XMATCH, xmatch_fingerprint(config, sources_digest(con)))
        known = pull.start(refresh=refresh, echo=echo)

        def visit(chunk: Chunk, _records: Mapping[str, PageRecord]) -> PageRecord:
            return process_chunk(pull, chunk, config=config, source=source)

        with run.stage("query"):
            stats = pull.run(top_chunks(n_sources, config.chunk_rows), known, visit,
                             progress=Progress("SIMBAD cross-match", n_sources, unit="sources",
                                               amount=chunk_sources))
        run.count("chunks", stats.done)
        run.count("chunks_split", stats.split)
        run.count("candidates", stats.expected_rows)
        run.count("sources", n_sources)
        with run.stage("build"), transaction(con):
            pull.verify()
            run.count("matched_sources", stage_matches(con))
            swap_in(con, MATCH_TABLE)
    return run.row_counts


def stage_matches(con: duckdb.DuckDBPyConnection) -> int:
    cols = quoted([c.name for c in load_schema(MATCH_TABLE).columns])
    staged = create_staging(con, MATCH_TABLE)
    con.execute(f"INSERT INTO {staged} (source_file, source_row, {cols}) "
                f"SELECT 'simbad-tap', NULL, {cols} FROM {PULL_TABLE} ORDER BY name")
    dup = count_rows(con, f"SELECT count(*) - count(DISTINCT name) FROM {staged}")
    if dup:
        raise SchemaError(f"{dup} sources have two cross-match rows; rerun with --refresh")
    return count_rows(con, f"SELECT count(*) FROM {staged}")
