"""`xpipe warehouse --source csc20|csc21`: every CSC detection over TAP, resumable.

The sky is cut into Dec bands (the top-level pages). Each page is counted (`COUNT(*)` of the
same join), fetched when it fits the service's row limit, and split in two when the count is
above the limit, when the service says OVERFLOW, or when the rows returned differ from the
count: a truncated page is never kept. A fetched page is validated against
schemas/raw.detections.yaml (the same `append_input` as file loads) and lands in
raw.detections__pull together with its meta.ingest_pages row, in one transaction. When every
page is done, raw.detections is rebuilt from the landed pages in one transaction, with det_id
in page order then (name, obsid, obi, region_id): the same table whether or not the pull was
interrupted, resumed or split differently on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import duckdb
from tqdm import tqdm

from xpipe.core.progress import progress_bar
from xpipe.ingest.files import append_input, check_unique, create_staging, open_arrow
from xpipe.ingest.paging import (
    TOTAL_PAGE,
    PageRecord,
    check_resumable,
    contract_signature,
    ensure_manifest,
    fingerprint,
    load_pages,
    record_page,
    reset_pull,
)
from xpipe.services.csc import Box, CscConfig, count_query, dec_bands, detections_query
from xpipe.services.tap import Overflow, ServiceError, TapClient, TapResult
from xpipe.warehouse.connection import scalar, staging_name, swap_in, table_exists, transaction
from xpipe.warehouse.contracts import SchemaError, load_schema
from xpipe.warehouse.provenance import recorded_run

TABLE = "raw.detections"
PULL_TABLE = "raw.detections__pull"
KEY = ("name", "obsid", "obi", "region_id")
MAX_SPLIT_DEPTH = 100  # 2 × log2(180° / 1e-4°) spatial halvings + 31 obsid halvings
MAX_PAGES = 1_000_000  # bounds the page loop even if a service answered nonsense forever


class DetectionSource(Protocol):
    """What the pull needs from a service (the tests substitute a fake)."""

    def count(self, box: Box | None) -> int: ...

    def fetch(self, box: Box, mode: str) -> TapResult: ...


@dataclass
class CscSource:
    config: CscConfig
    client: TapClient

    def count(self, box: Box | None) -> int:
        return self.client.count(count_query(self.config.schema, box))

    def fetch(self, box: Box, mode: str) -> TapResult:
        return self.client.query(detections_query(self.config.schema, box, contract_names()),
                                 maxrec=self.config.row_limit, mode=mode)


@dataclass(frozen=True)
class Page:
    page_id: str
    top_index: int
    box: Box
    depth: int = 0

    def children(self) -> tuple[Page, Page]:
        if self.depth >= MAX_SPLIT_DEPTH or not self.box.splittable():
            raise ServiceError(f"page {self.page_id} ({self.box.label()}) cannot be split "
                               "further but the service still does not return it whole")
        a, b = self.box.split()
        return (Page(f"{self.page_id}.0", self.top_index, a, self.depth + 1),
                Page(f"{self.page_id}.1", self.top_index, b, self.depth + 1))


@dataclass(frozen=True)
class PullOptions:
    refresh: bool = False
    labels: Path | None = None
    match_radius_arcsec: float = 1.0


def top_pages(config: CscConfig) -> list[Page]:
    return [Page(f"{i:03d}", i, box) for i, box in enumerate(dec_bands(config.band_deg))]


def pull_fingerprint(config: CscConfig) -> str:
    return fingerprint(schema=config.schema, band_deg=config.band_deg,
                       contract=contract_signature(TABLE),
                       query=detections_query("S", Box(0, 1), contract_names()))


def contract_names() -> list[str]:
    return [c.name for c in load_schema(TABLE).columns]


def quoted(cols: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in cols)


def ensure_pull_table(con: duckdb.DuckDBPyConnection) -> None:
    if table_exists(con, PULL_TABLE):
        return
    cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in load_schema(TABLE).columns)
    con.execute(f"CREATE TABLE {PULL_TABLE} (\n  page_id VARCHAR NOT NULL,\n  top_index INTEGER "
                f"NOT NULL,\n  source_row BIGINT,\n  {cols}\n)")


def row_digest_sql(cols: list[str]) -> str:
    """SQL for one row's md5 over the contract columns (NULL-safe, type-stable text)."""
    parts = ", ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '\\N')" for c in cols)
    return f"md5(concat_ws('|', {parts}))"


def page_checksums(con: duckdb.DuckDBPyConnection, where: str = "TRUE",
                   params: list | None = None) -> dict[str, str]:
    """md5 over each landed page's row digests in digest order."""
    digest = row_digest_sql(contract_names())
    rows = con.execute(
        f"SELECT page_id, md5(string_agg(d, '' ORDER BY d)) FROM (SELECT page_id, {digest} AS d "
        f"FROM {PULL_TABLE} WHERE {where}) GROUP BY page_id", params or []).fetchall()
    return dict(rows)


def land_page(con: duckdb.DuckDBPyConnection, config: CscConfig, fp: str, page: Page,
              result: TapResult, expected: int) -> PageRecord:
    """Validate a fetched page and store it with its manifest row, all or nothing."""
    # no slashes: ingest keys rows by Path(origin), which would fold the URL's "//"
    origin = f"{config.release} TAP {config.schema} page {page.page_id} ({page.box.label()})"
    staged = staging_name(TABLE)
    names = contract_names()
    with transaction(con):
        create_staging(con, TABLE)
        try:
            inp = open_arrow(con, result.table, origin, alias="__tap_page")
            rows = append_input(con, TABLE, inp, id_column="det_id")  # renumbered at the end
        except SchemaError as exc:
            raise SchemaError(
                f"{exc}\nThe answer of {config.url} no longer matches schemas/raw.detections.yaml: "
                f"nothing of this page was kept and {TABLE} is unchanged (pages already "
                f"pulled stay in {PULL_TABLE}; rerun with --refresh to start over)") from exc
        finally:
            con.unregister("__tap_page")
        con.execute(f"INSERT INTO {PULL_TABLE} (page_id, top_index, source_row, {quoted(names)}) "
                    f"SELECT ?, ?, source_row, {quoted(names)} FROM {staged}",
                    [page.page_id, page.top_index])
        con.execute(f"DROP TABLE {staged}")
        checksum = page_checksums(con, "page_id = ?", [page.page_id]).get(page.page_id)
        record = PageRecord(
            pull=config.release, fingerprint=fp, page_id=page.page_id,
            top_index=page.top_index, status="done", rows=rows, expected_rows=expected,
            bounds=page.box.label(), dec_lo=page.box.dec_lo, dec_hi=page.box.dec_hi,
            ra_lo=page.box.ra_lo, ra_hi=page.box.ra_hi, checksum=checksum, mode=result.mode,
            attempts=result.attempts, seconds=round(result.seconds, 3))
        record_page(con, record)
    return record


def split_record(config: CscConfig, fp: str, page: Page, counted: int | None, note: str
                 ) -> PageRecord:
    return PageRecord(pull=config.release, fingerprint=fp, page_id=page.page_id,
                      top_index=page.top_index, status="split", rows=counted,
                      expected_rows=counted, bounds=page.box.label(), dec_lo=page.box.dec_lo,
                      dec_hi=page.box.dec_hi, ra_lo=page.box.ra_lo, ra_hi=page.box.ra_hi,
                      note=note)


@dataclass
class PullStats:
    pages_done: int = 0
    pages_split: int = 0
    rows: int = 0
    fetched_rows: int = 0
    fetch_seconds: float = 0.0


def process_page(con: duckdb.DuckDBPyConnection, config: CscConfig, fp: str,
                 source: DetectionSource, page: Page, count_hint: int | None = None
                 ) -> PageRecord:
    """Count, fetch and land one page, or record why it must be split.

    `count_hint` is the page's count when it is known without asking (the parent's count
    minus its first half's): the fetched rows are still checked against it."""
    expected = source.count(page.box) if count_hint is None else count_hint
    note = None
    if expected > config.row_limit:
        note = f"COUNT(*) = {expected:,} is above the page limit {config.row_limit:,}"
    else:
        mode = "async" if expected > config.sync_row_limit else "sync"
        try:
            result = source.fetch(page.box, mode) if expected else None
        except Overflow as exc:
            result, note = None, f"service reported OVERFLOW ({exc})"
        if note is None:
            got = result.table.num_rows if result else 0
            if got != expected:
                note = f"{got:,} rows returned but COUNT(*) = {expected:,}"
            elif result is None:
                return land_empty(con, config, fp, page)
            else:
                return land_page(con, config, fp, page, result, expected)
    record = split_record(config, fp, page, expected, note)
    page.children()  # fails clearly if the page cannot be split
    with transaction(con):
        record_page(con, record)
    return record


def land_empty(con: duckdb.DuckDBPyConnection, config: CscConfig, fp: str, page: Page
               ) -> PageRecord:
    record = PageRecord(pull=config.release, fingerprint=fp, page_id=page.page_id,
                        top_index=page.top_index, status="done", rows=0, expected_rows=0,
                        bounds=page.box.label(), dec_lo=page.box.dec_lo,
                        dec_hi=page.box.dec_hi, ra_lo=page.box.ra_lo, ra_hi=page.box.ra_hi,
                        checksum=None, mode="count")
    with transaction(con):
        record_page(con, record)
    return record


def sibling_count(page_id: str, records: dict[str, PageRecord]) -> int | None:
    """A second half's count from its parent's and the first half's, when both are known."""
    if not page_id.endswith(".1"):
        return None
    parent, first = records.get(page_id[:-2]), records.get(page_id[:-1] + "0")
    if parent is None or first is None or parent.expected_rows is None \
            or first.expected_rows is None:
        return None
    return max(parent.expected_rows - first.expected_rows, 0)


def walk_pages(roots: list[Page], done: dict[str, PageRecord],
               visit: Callable[[Page, int | None], PageRecord]
               ) -> Iterator[tuple[Page, PageRecord, bool]]:
    """Depth-first over the page tree in page order, skipping pages already done.

    Yields (page, its record, whether it was processed now)."""
    stack = list(reversed(roots))
    records = dict(done)
    visited = 0
    while stack:
        visited += 1
        if visited > MAX_PAGES:
            raise ServiceError(f"more than {MAX_PAGES:,} pages: the service's answers do not "
                               "converge; stopping")
        page = stack.pop()
        record = records.get(page.page_id)
        fresh = record is None
        if record is None:
            record = visit(page, sibling_count(page.page_id, records))
            records[page.page_id] = record
        if record.status == "split":
            stack.extend(reversed(page.children()))
        yield page, record, fresh


def ensure_total(con: duckdb.DuckDBPyConnection, config: CscConfig, fp: str,
                 source: DetectionSource, known: dict[str, PageRecord]) -> int:
    """COUNT(*) of the whole pull, asked once and kept in the manifest."""
    if TOTAL_PAGE in known:
        return int(known[TOTAL_PAGE].rows or 0)
    total = source.count(None)
    with transaction(con):
        record_page(con, PageRecord(pull=config.release, fingerprint=fp, page_id=TOTAL_PAGE,
                                    top_index=-1, status="total", rows=total,
                                    expected_rows=total, mode="count"))
    return total


def pull_pages(con: duckdb.DuckDBPyConnection, config: CscConfig, source: DetectionSource,
               refresh: bool = False, echo: Callable[[str], None] = print) -> PullStats:
    """Bring every page into raw.detections__pull (resuming), returning what was done."""
    ensure_manifest(con)
    fp = pull_fingerprint(config)
    if refresh:
        with transaction(con):
            reset_pull(con, config.release, PULL_TABLE)
    done_before = check_resumable(con, config.release, fp, config.release)
    ensure_pull_table(con)
    known = load_pages(con, config.release)
    if done_before:
        echo(f"resuming the {config.release} pull: {done_before:,} pages already in the "
             "warehouse")
    total = ensure_total(con, config, fp, source, known)
    stats = PullStats()
    already = sum(int(p.rows or 0) for p in known.values() if p.status == "done")
    with progress_bar(f"pull {config.release}", total=total) as bar:
        bar.initial = bar.n = already  # rate and ETA count this run's rows only
        for _page, record, fresh in walk_pages(
                top_pages(config), known,
                lambda p, hint: process_page(con, config, fp, source, p, hint)):
            update_stats(stats, record, fresh, bar)
    if stats.rows != total:
        raise ServiceError(
            f"the pages hold {stats.rows:,} rows but the service counts {total:,} for the "
            f"whole {config.release} join: the catalogue changed during the pull, or rows "
            "were lost; rerun with --refresh")
    return stats


def update_stats(stats: PullStats, record: PageRecord, fresh: bool, bar: tqdm) -> None:
    if record.status == "split":
        stats.pages_split += 1
        return
    stats.pages_done += 1
    rows = int(record.rows or 0)
    stats.rows += rows
    if fresh:
        stats.fetched_rows += rows
        stats.fetch_seconds += record.seconds or 0.0
        bar.update(rows)
    bar.set_postfix(pages=stats.pages_done, split=stats.pages_split, refresh=False)


def verify_pages(con: duckdb.DuckDBPyConnection, pull: str) -> None:
    """Landed rows still match each page's manifest row count and checksum."""
    expected = {p.page_id: p for p in load_pages(con, pull).values() if p.status == "done"}
    actual = page_checksums(con)
    counts = dict(con.execute(f"SELECT page_id, count(*) FROM {PULL_TABLE} GROUP BY page_id"
                              ).fetchall())
    for page_id in sorted(set(actual) | {k for k, p in expected.items() if p.rows}):
        record = expected.get(page_id)
        if record is None:
            raise SchemaError(f"{PULL_TABLE} holds rows of page {page_id}, which the manifest "
                              "does not list as done; rerun with --refresh")
        if counts.get(page_id, 0) != record.rows or actual.get(page_id) != record.checksum:
            raise SchemaError(f"page {page_id}: landed rows differ from the manifest "
                              f"({counts.get(page_id, 0)} rows vs {record.rows}); rerun with "
                              "--refresh")


def stage_final(con: duckdb.DuckDBPyConnection, config: CscConfig) -> int:
    """raw.detections__staging from the landed pages, det_id in the documented order."""
    names = contract_names()
    order = ("top_index, name, obsid, obi NULLS FIRST, region_id NULLS FIRST, "
             f"{row_digest_sql(names)}")
    staged = staging_name(TABLE)
    con.execute(f"DROP TABLE IF EXISTS {staged}")
    con.execute(load_schema(TABLE).ddl(staged))
    label = f"{config.release}:{config.schema} band "
    con.execute(
        f"INSERT INTO {staged} (det_id, source_file, source_row, {quoted(names)}) "
        f"SELECT row_number() OVER (ORDER BY {order}), "
        f"'{label}' || lpad(CAST(top_index AS VARCHAR), 3, '0'), "
        f"row_number() OVER (PARTITION BY top_index ORDER BY {order}), {quoted(names)} "
        f"FROM {PULL_TABLE}")
    check_unique(con, staged, list(KEY), "detection key", where='"region_id" IS NOT NULL')
    return int(scalar(con, f"SELECT count(*) FROM {staged}"))


def stage_labels(con: duckdb.DuckDBPyConnection, options: PullOptions) -> tuple[int, int]:
    """Labels from a file if given; otherwise empty label tables (`xpipe crossmatch` fills
    raw.simbad_match), so no labels of another catalogue survive the new detections."""
    from xpipe.ingest.load import (
        labels_are_match_file,
        stage_crossmatch,
        stage_match_file,
        stage_simbad,
    )

    match_file = options.labels is not None and labels_are_match_file(con, options.labels)
    objects = stage_simbad(con, None if match_file else options.labels)
    swap_in(con, "raw.simbad")
    if match_file:
        matched = stage_match_file(con, options.labels)
    elif options.labels is not None:
        matched = stage_crossmatch(con, options.match_radius_arcsec)
    else:
        staged = staging_name("raw.simbad_match")
        con.execute(f"DROP TABLE IF EXISTS {staged}")
        con.execute(load_schema("raw.simbad_match").ddl(staged))
        matched = 0
    swap_in(con, "raw.simbad_match")
    return objects, matched


def pull_catalogue(con: duckdb.DuckDBPyConnection, config: CscConfig,
                   source: DetectionSource | None = None, options: PullOptions | None = None,
                   echo: Callable[[str], None] = print) -> dict[str, int]:
    """The whole `xpipe warehouse --source csc20|csc21`: pull, verify, swap in."""
    options = options or PullOptions()
    source = source or CscSource(config, config.client(log=echo))
    params = {"source": config.release, "tap_url": config.url, "schema": config.schema,
              "band_deg": config.band_deg, "row_limit": config.row_limit,
              "refresh": options.refresh,
              "labels": str(options.labels) if options.labels else None}
    with recorded_run(con, "warehouse", params) as run:
        with run.stage("pull"):
            stats = pull_pages(con, config, source, options.refresh, echo)
        run.count("pages", stats.pages_done)
        run.count("pages_split", stats.pages_split)
        run.count("fetched_rows", stats.fetched_rows)
        if stats.fetch_seconds > 0:
            run.count("fetch_rows_per_s", int(stats.fetched_rows / stats.fetch_seconds))
        with run.stage("build"), transaction(con):
            verify_pages(con, config.release)
            run.count("detections", stage_final(con, config))
            swap_in(con, TABLE)
            objects, matched = stage_labels(con, options)
            run.count("simbad_objects", objects)
            run.count("matched_sources", matched)
            run.count("sources", int(scalar(
                con, f"SELECT count(*) FROM (SELECT name FROM {TABLE} GROUP BY name)")))
    return run.row_counts


def with_limits(config: CscConfig, row_limit: int | None, band_deg: float | None,
                sync_row_limit: int | None = None) -> CscConfig:
    """The release's configuration with the CLI's paging overrides."""
    changes: dict[str, float | int] = {}
    if row_limit:
        changes["row_limit"] = row_limit
    if band_deg:
        changes["band_deg"] = band_deg
    if sync_row_limit is not None:
        changes["sync_row_limit"] = sync_row_limit
    return replace(config, **changes)

