"""`xpipe warehouse --source csc20|csc21`: every CSC detection over TAP, resumable.

The sky is cut into Dec bands (the top-level pages). Each page is counted (`COUNT(*)` of the
same join), fetched when it fits the service's row limit, and split in two when the count is
above the limit, when the service says OVERFLOW, or when the rows returned differ from the
count: a truncated page is never kept. COUNT(*) is not documented for the CSC services: when
the service refuses it, pages are fetched without counts, and a page is complete only when
it returns fewer rows than the row limit (MAXREC) without OVERFLOW; otherwise it is split.
A fetched page is validated against schemas/raw.detections.yaml (the same `append_input` as
file loads) and lands in raw.detections__pull together with its meta.ingest_pages row, in one
transaction (the paging and resuming are `paging.ResumablePull`'s, shared with the SIMBAD
cross-match). When every
page is done, raw.detections is rebuilt from the landed pages in one transaction, with det_id
in page order then (name, obsid, obi, region_id): the same table whether or not the pull was
interrupted, resumed or split differently on the way. That transaction also drops everything
derived from the detections replaced (`warehouse.derived`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import duckdb

from xpipe.ingest.files import check_unique, create_staging
from xpipe.ingest.load import (
    labels_are_match_file,
    stage_crossmatch,
    stage_match_file,
    stage_simbad,
)
from xpipe.ingest.paging import (
    PageRecord,
    Progress,
    PullSpec,
    PullStats,
    ResumablePull,
    Unit,
    contract_signature,
    count_rows,
    fingerprint,
    quoted,
    row_digest_sql,
)
from xpipe.services.csc import (
    CSC_RELEASES,
    Box,
    CscConfig,
    count_query,
    dec_bands,
    detections_query,
    source_query,
)
from xpipe.services.tap import Overflow, QueryRefusedError, ServiceError, TapClient, TapResult
from xpipe.warehouse.connection import swap_in, transaction
from xpipe.warehouse.contracts import SchemaError, detection_key, load_schema
from xpipe.warehouse.derived import reset_derived
from xpipe.warehouse.provenance import recorded_run

TABLE = "raw.detections"
PULL_TABLE = "raw.detections__pull"
KEY = detection_key()
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
                                 mode=mode)


@dataclass(frozen=True)
class Page(Unit):
    """An RA/Dec (and obsid) box of the pull."""

    box: Box
    depth: int = 0

    def children(self) -> tuple[Page, Page]:
        if self.depth >= MAX_SPLIT_DEPTH or not self.box.splittable():
            raise ServiceError(f"page {self.page_id} ({self.box.label()}) cannot be split "
                               "further but the service still does not return it whole")
        (id_a, id_b), (a, b) = self.halves(), self.box.split()
        return (Page(id_a, self.top_index, a, self.depth + 1),
                Page(id_b, self.top_index, b, self.depth + 1))

    def located(self, record: PageRecord) -> PageRecord:
        box = self.box
        return replace(record, bounds=box.label(), dec_lo=box.dec_lo, dec_hi=box.dec_hi,
                       ra_lo=box.ra_lo, ra_hi=box.ra_hi)


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


def pull_spec(config: CscConfig) -> PullSpec:
    """The CSC pull of one release; both releases land in raw.detections__pull."""
    return PullSpec(
        pull=config.release, contract=TABLE, pull_table=PULL_TABLE,
        unit_columns=("page_id", "top_index", "source_row"), id_column="det_id",
        what=f"{config.release} pull", noun="page",
        settings="schema, paging or table contract", on_change="fail",
        shares_table_with=tuple(r for r in CSC_RELEASES if r != config.release),
        max_units=MAX_PAGES)


def contract_names() -> list[str]:
    return [c.name for c in load_schema(TABLE).columns]


def one_source_query(config: CscConfig, name: str) -> str:
    """The ADQL that fetches the rows of one master source from the release's service, with
    the columns the pull loads."""
    return source_query(config.schema, name, contract_names())


def process_page(pull: ResumablePull, page: Page, *, config: CscConfig,
                 source: DetectionSource, records: Mapping[str, PageRecord],
                 counted: bool = True) -> PageRecord:
    """Count, fetch and land one page, or record why it must be split.

    The count is not asked when it is known (the parent's count minus its first half's): the
    fetched rows are still checked against it. Without counts (`counted` False, or the service
    refuses this page's COUNT(*)) the page goes to `process_uncounted`."""
    expected = sibling_count(page.page_id, records) if counted else None
    if counted and expected is None:
        try:
            expected = source.count(page.box)
        except QueryRefusedError:
            expected = None
    if expected is None:
        return process_uncounted(pull, page, config=config, source=source)
    if expected > config.row_limit:
        return pull.split(page, counted=expected, note=f"COUNT(*) = {expected:,} is above "
                                                       f"the page limit {config.row_limit:,}")
    if expected == 0:
        return pull.land(page, None, origin=page.page_id, result=None, expected_rows=0)
    try:
        result = source.fetch(page.box, "async" if expected > config.sync_row_limit else "sync")
    except Overflow as exc:
        return pull.split(page, counted=expected, note=f"service reported OVERFLOW ({exc})")
    if result.table.num_rows != expected:
        return pull.split(page, counted=expected, note=f"{result.table.num_rows:,} rows "
                                                       f"returned but COUNT(*) = {expected:,}")
    return land_page(pull, page, result, config=config, expected=expected)


UNCOUNTED_NOTE = "not counted: fewer rows than MAXREC and no OVERFLOW"


def process_uncounted(pull: ResumablePull, page: Page, *, config: CscConfig,
                      source: DetectionSource) -> PageRecord:
    """One page without a count: complete when the service returns fewer rows than the row
    limit (MAXREC) and does not say OVERFLOW; split otherwise (a page of exactly MAXREC rows
    may have been cut there)."""
    mode = "async" if config.row_limit > config.sync_row_limit else "sync"
    try:
        result = source.fetch(page.box, mode)
    except Overflow as exc:
        return pull.split(page, note=f"service reported OVERFLOW ({exc}); not counted")
    returned = result.table.num_rows
    if returned >= config.row_limit:
        return pull.split(page, note=f"{returned:,} rows returned, the page limit "
                                     f"{config.row_limit:,}: maybe truncated (not counted)")
    return land_page(pull, page, result, config=config, expected=None, note=UNCOUNTED_NOTE)


def land_page(pull: ResumablePull, page: Page, result: TapResult, *, config: CscConfig,
              expected: int | None, note: str | None = None) -> PageRecord:
    """Validate and land a fetched page (all or nothing)."""
    # no slashes: ingest keys rows by Path(origin), which would fold the URL's "//"
    origin = f"{config.release} TAP {config.schema} page {page.page_id} ({page.box.label()})"
    try:
        return pull.land(page, result.table, origin=origin, result=result,
                         expected_rows=expected, note=note)
    except SchemaError as exc:
        raise SchemaError(
            f"{exc}\nThe answer of {config.url} no longer matches schemas/raw.detections.yaml: "
            f"nothing of this page was kept and {TABLE} is unchanged (pages already "
            f"pulled stay in {PULL_TABLE}; rerun with --refresh to start over)") from exc


def sibling_count(page_id: str, records: Mapping[str, PageRecord]) -> int | None:
    """A second half's count from its parent's and the first half's, when both are known."""
    if not page_id.endswith(".1"):
        return None
    parent, first = records.get(page_id[:-2]), records.get(page_id[:-1] + "0")
    if parent is None or first is None or parent.expected_rows is None \
            or first.expected_rows is None:
        return None
    return max(parent.expected_rows - first.expected_rows, 0)


def pull_pages(con: duckdb.DuckDBPyConnection, config: CscConfig, source: DetectionSource, *,
               refresh: bool = False, echo: Callable[[str], None] = print
               ) -> tuple[ResumablePull, PullStats]:
    """Bring every page into raw.detections__pull (resuming), returning what was done."""
    pull = ResumablePull(con, pull_spec(config), pull_fingerprint(config))
    known = pull.start(refresh=refresh, echo=echo)
    total: int | None
    try:
        total = pull.expected_total(known, lambda: source.count(None))
    except QueryRefusedError as exc:
        total = None
        echo(f"the service refuses COUNT(*) ({str(exc).splitlines()[0]}): paging without "
             f"counts; a page is kept when it returns fewer rows than MAXREC "
             f"({config.row_limit:,}) without OVERFLOW, otherwise it is split")
    counted = total is not None
    stats = pull.run(top_pages(config), known,
                     lambda page, records: process_page(pull, page, config=config,
                                                        source=source, records=records,
                                                        counted=counted),
                     progress=Progress(f"pull {config.release}", total))
    if total is not None and stats.rows != total:
        raise ServiceError(
            f"the pages hold {stats.rows:,} rows but the service counts {total:,} for the "
            f"whole {config.release} join: the catalogue changed during the pull, or rows "
            "were lost; rerun with --refresh")
    return pull, stats


def one_match_type(names: list[str]) -> str:
    """The landed rows with one row where the same detection came with several match types
    (one detection reached through two master-stack associations of its master source): the
    one with the first match_type, 'a' (ambiguous) before 'u' (unique), then NULL."""
    others = quoted([c for c in names if c != "match_type"])
    return (f"(SELECT * FROM {PULL_TABLE} QUALIFY row_number() OVER (PARTITION BY {others} "
            f"ORDER BY match_type NULLS LAST) = 1)")


def stage_final(con: duckdb.DuckDBPyConnection, config: CscConfig) -> int:
    """raw.detections__staging from the landed pages, det_id in the documented order."""
    names = contract_names()
    key = ", ".join(f"{k} NULLS FIRST" for k in KEY)  # name and obsid are never null
    order = f"top_index, {key}, {row_digest_sql(names)}"
    staged = create_staging(con, TABLE)
    label = f"{config.release}:{config.schema} band "
    con.execute(
        f"INSERT INTO {staged} (det_id, source_file, source_row, {quoted(names)}) "
        f"SELECT row_number() OVER (ORDER BY {order}), "
        f"'{label}' || lpad(CAST(top_index AS VARCHAR), 3, '0'), "
        f"row_number() OVER (PARTITION BY top_index ORDER BY {order}), {quoted(names)} "
        f"FROM {one_match_type(names)}")
    check_unique(con, staged, list(KEY), what="detection key", where='"region_id" IS NOT NULL')
    return count_rows(con, f"SELECT count(*) FROM {staged}")


def stage_labels(con: duckdb.DuckDBPyConnection, options: PullOptions) -> tuple[int, int]:
    """Labels from a file if given; otherwise empty label tables (`xpipe crossmatch` fills
    raw.simbad_match), so no labels of another catalogue survive the new detections."""
    labels = options.labels
    match_file = labels is not None and labels_are_match_file(con, labels)
    objects = stage_simbad(con, None if match_file else labels)
    swap_in(con, "raw.simbad")
    if labels is None:
        create_staging(con, "raw.simbad_match")
        matched = 0
    elif match_file:
        matched = stage_match_file(con, labels)
    else:
        matched = stage_crossmatch(con, options.match_radius_arcsec)
    swap_in(con, "raw.simbad_match")
    return objects, matched


def pull_catalogue(con: duckdb.DuckDBPyConnection, config: CscConfig, *,
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
            pull, stats = pull_pages(con, config, source, refresh=options.refresh, echo=echo)
        run.count("pages", stats.done)
        run.count("pages_split", stats.split)
        run.count("fetched_rows", stats.fetched_rows)
        if stats.fetch_seconds > 0:
            run.count("fetch_rows_per_s", int(stats.fetched_rows / stats.fetch_seconds))
        with run.stage("build"), transaction(con):
            pull.verify()
            run.count("detections", stage_final(con, config))
            swap_in(con, TABLE)
            run.count("derived_tables_reset", len(reset_derived(con)))
            objects, matched = stage_labels(con, options)
            run.count("simbad_objects", objects)
            run.count("matched_sources", matched)
            run.count("sources", count_rows(
                con, f"SELECT count(*) FROM (SELECT name FROM {TABLE} GROUP BY name)"))
    return run.row_counts


def with_limits(config: CscConfig, row_limit: int | None, band_deg: float | None, *,
                sync_row_limit: int | None = None) -> CscConfig:
    """The release's configuration with the CLI's paging overrides."""
    return replace(config, row_limit=row_limit or config.row_limit,
                   band_deg=band_deg or config.band_deg,
                   sync_row_limit=config.sync_row_limit if sync_row_limit is None
                   else sync_row_limit)
