"""Resumable service pulls: the page manifest meta.ingest_pages and the one walk over units.

A pull (the CSC pull of `xpipe warehouse --source csc20|csc21`, the SIMBAD cross-match of
`xpipe crossmatch`) is a list of top-level units (Dec bands, chunks of uploaded sources), each
either done in one query or split in two (`page_id.0`, `page_id.1`) when the service cannot
return it whole. `ResumablePull` walks them depth-first in page order and lands each unit's
rows, validated against the pull's table contract, in its pull table together with the unit's
manifest row, in one transaction: after a crash (or SIGKILL) either both are there or neither
is, and a rerun skips the units marked done. A pull resumes only with the fingerprint it
started with (resuming with another schema, paging or contract would mix incompatible
units); `verify` checks the landed rows against the manifest before the final table is built.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal, NamedTuple, Self, TypeVar, cast

import duckdb
import pyarrow as pa

from xpipe.core.progress import progress_bar
from xpipe.ingest.files import append_input, create_staging, open_arrow
from xpipe.services.tap import ServiceError, TapResult
from xpipe.warehouse.connection import (
    cleaned_up,
    drop_relation,
    scalar,
    table_exists,
    transaction,
)
from xpipe.warehouse.contracts import SchemaError, create_table, load_schema

MANIFEST = "meta.ingest_pages"
TOTAL_PAGE = "*"
FROM_UNIT = ("page_id", "top_index")
EchoFn = Callable[[str], None]


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


@dataclass(frozen=True)
class Unit:
    """One piece of a pull: top-level units are numbered, a split unit's halves are
    `page_id.0` and `page_id.1`. Subclasses say how to halve themselves and where they lie."""

    page_id: str
    top_index: int

    def halves(self) -> tuple[str, str]:
        return f"{self.page_id}.0", f"{self.page_id}.1"

    def children(self) -> tuple[Self, Self]:
        """The two halves; raises ServiceError when the unit cannot be split further."""
        raise NotImplementedError

    def located(self, record: PageRecord) -> PageRecord:
        """`record` with this unit's bounds (a box on the sky, a range of uploaded rows)."""
        return record


U = TypeVar("U", bound=Unit)
Visit = Callable[[U, Mapping[str, PageRecord]], PageRecord]


@dataclass(frozen=True)
class PullSpec:
    """What tells one resumable pull from another."""

    pull: str  # its key in the manifest: csc20, csc21, simbad
    contract: str  # the table contract its rows are validated against
    pull_table: str  # where landed rows wait for the final table
    # the pull table's own columns before the contract's (its contract: schemas/<pull_table>)
    unit_columns: tuple[str, ...] = ("page_id",)
    id_column: str | None = None  # a generated id the contract numbers rows by
    what: str = "pull"  # for messages: "csc20 pull", "cross-match"
    noun: str = "page"  # for messages: page, chunk
    settings: str = "settings"  # what the fingerprint covers, for messages
    on_change: Literal["fail", "restart"] = "fail"  # another fingerprint is stored
    shares_table_with: tuple[str, ...] = ()  # other pulls landing in the same pull table
    max_units: int = 1_000_000  # bounds the walk even if a service answered nonsense forever

    def columns(self) -> list[str]:
        return [c.name for c in load_schema(self.contract).columns]



class Step(NamedTuple):
    unit: Unit
    record: PageRecord
    fresh: bool  # processed by this run, not resumed from the manifest


@dataclass
class PullStats:
    done: int = 0
    split: int = 0
    rows: int = 0  # rows landed by the done units, this run's and earlier runs'
    expected_rows: int = 0
    fetched_rows: int = 0  # rows landed by this run
    fetch_seconds: float = 0.0

    def add(self, step: Step) -> None:
        if step.record.status == "split":
            self.split += 1
            return
        self.done += 1
        self.rows += int(step.record.rows or 0)
        self.expected_rows += int(step.record.expected_rows or 0)
        if step.fresh:
            self.fetched_rows += int(step.record.rows or 0)
            self.fetch_seconds += step.record.seconds or 0.0


def landed_rows(record: PageRecord) -> int:
    return int(record.rows or 0)


@dataclass(frozen=True)
class Progress:
    """The progress bar of a walk: `amount` is what a done unit adds to it."""

    label: str
    total: int | None
    unit: str = "rows"
    amount: Callable[[PageRecord], int] = landed_rows


def fingerprint(**parts: object) -> str:
    """A short stable hash of what a pull's pages depend on."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def contract_signature(table: str) -> list[str]:
    """Column names and types of a contract: part of a pull's fingerprint."""
    return [f"{c.name}:{c.type}" for c in load_schema(table).columns]


def quoted(cols: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in cols)


def row_digest_sql(cols: Sequence[str]) -> str:
    """SQL for one row's md5 over the contract columns (NULL-safe, type-stable text)."""
    parts = ", ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '\\N')" for c in cols)
    return f"md5(concat_ws('|', {parts}))"


def count_rows(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> int:
    """An integer-valued one-row query (a count)."""
    return int(cast(int, scalar(con, query, params)))


def ensure_manifest(con: duckdb.DuckDBPyConnection) -> None:
    if not table_exists(con, MANIFEST):
        create_table(con, MANIFEST)


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


def reset_pull(con: duckdb.DuckDBPyConnection, pulls: Sequence[str], pull_table: str) -> None:
    """Forget pulls: their manifest rows and the rows they landed (call inside a transaction)."""
    marks = ", ".join("?" for _ in pulls)
    con.execute(f"DELETE FROM {MANIFEST} WHERE pull IN ({marks})", list(pulls))
    drop_relation(con, pull_table)


class ResumablePull:
    """One pull over units, resumable from meta.ingest_pages (see the module docstring).

    `start`, then `run` (which calls back for every unit not yet done; the callback ends in
    `land` or `split`), then, inside the transaction that builds the final table, `verify`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, spec: PullSpec, fp: str) -> None:
        self.con, self.spec, self.fp = con, spec, fp

    def start(self, *, refresh: bool, echo: EchoFn) -> dict[str, PageRecord]:
        """Forget what must be started over; returns the manifest rows to resume from."""
        spec = self.spec
        ensure_manifest(self.con)
        stored = stored_fingerprints(self.con, spec.pull)
        changed = bool(stored) and stored != {self.fp}
        if changed and not refresh:
            if spec.on_change == "fail":
                raise SchemaError(
                    f"an unfinished {spec.what} with other settings ({spec.settings}) is in "
                    "the warehouse; rerun with --refresh to start over")
            echo(f"{spec.settings} changed since the last {spec.what}: starting it over")
        if refresh or changed or not stored:  # rows already in the pull table are not ours
            self._reset(echo)
        self._ensure_pull_table()
        known = load_pages(self.con, spec.pull)
        done = sum(1 for p in known.values() if p.status == "done")
        if done:
            echo(f"resuming the {spec.what}: {done:,} {spec.noun}s already in the warehouse")
        return known

    def _reset(self, echo: EchoFn) -> None:
        """Forget this pull, and the pulls that landed in the same table (their rows go)."""
        spec = self.spec
        others = [p for p in spec.shares_table_with if stored_fingerprints(self.con, p)]
        if others:
            echo(f"forgetting the {', '.join(others)} pages landed in {spec.pull_table}: it "
                 "holds one pull at a time")
        with transaction(self.con):
            reset_pull(self.con, [spec.pull, *others], spec.pull_table)

    def _ensure_pull_table(self) -> None:
        spec = self.spec
        if not table_exists(self.con, spec.pull_table):
            create_table(self.con, spec.pull_table)
            return
        found = [r[0] for r in self.con.execute(f"DESCRIBE {spec.pull_table}").fetchall()]
        if found != [*spec.unit_columns, *spec.columns()]:
            raise SchemaError(
                f"{spec.pull_table} has columns {', '.join(found)}, not those this version "
                f"of xpipe lands; rerun with --refresh to start the {spec.what} over")

    def expected_total(self, known: Mapping[str, PageRecord], count: Callable[[], int]) -> int:
        """The service's count of the whole pull, asked once and kept in the manifest."""
        if TOTAL_PAGE in known:
            return int(known[TOTAL_PAGE].rows or 0)
        total = count()
        with transaction(self.con):
            record_page(self.con, PageRecord(
                pull=self.spec.pull, fingerprint=self.fp, page_id=TOTAL_PAGE, top_index=-1,
                status="total", rows=total, expected_rows=total, mode="count"))
        return total

    def walk(self, roots: Sequence[U], known: Mapping[str, PageRecord], visit: Visit[U]
             ) -> Iterator[Step]:
        """Depth-first over the unit tree in page order; units not done yet go to `visit`
        (with the records so far), and a split unit's halves follow it."""
        stack = list(reversed(roots))
        records = dict(known)
        visited = 0
        while stack:
            visited += 1
            if visited > self.spec.max_units:
                raise ServiceError(f"more than {self.spec.max_units:,} {self.spec.noun}s: "
                                   "the service's answers do not converge; stopping")
            unit = stack.pop()
            record = records.get(unit.page_id)
            fresh = record is None
            if record is None:
                record = visit(unit, records)
                records[unit.page_id] = record
            if record.status == "split":
                stack.extend(reversed(unit.children()))
            yield Step(unit, record, fresh)

    def run(self, roots: Sequence[U], known: Mapping[str, PageRecord], visit: Visit[U], *,
            progress: Progress) -> PullStats:
        """Walk every unit with a progress bar; returns what was done."""
        stats = PullStats()
        already = sum(progress.amount(r) for r in known.values() if r.status == "done")
        with progress_bar(progress.label, total=progress.total, unit=progress.unit) as bar:
            bar.initial = bar.n = already  # rate and ETA count this run's units only
            for step in self.walk(roots, known, visit):
                stats.add(step)
                if step.fresh and step.record.status == "done":
                    bar.update(progress.amount(step.record))
                bar.set_postfix({f"{self.spec.noun}s": stats.done, "split": stats.split},
                                refresh=False)
        return stats

    def record(self, unit: Unit, status: str, *, rows: int | None = None,
               expected_rows: int | None = None, checksum: str | None = None,
               result: TapResult | None = None, note: str | None = None) -> PageRecord:
        """The manifest row of `unit`; without a `result` the unit was not queried."""
        return unit.located(PageRecord(
            pull=self.spec.pull, fingerprint=self.fp, page_id=unit.page_id,
            top_index=unit.top_index, status=status, rows=rows, expected_rows=expected_rows,
            checksum=checksum, note=note, mode=result.mode if result else None,
            attempts=result.attempts if result else None,
            seconds=round(result.seconds, 3) if result else None))

    def split(self, unit: Unit, *, note: str, counted: int | None = None) -> PageRecord:
        """Record that `unit` goes down as its two halves (failing clearly if it cannot)."""
        unit.children()
        record = self.record(unit, "split", rows=counted, expected_rows=counted, note=note)
        with transaction(self.con):
            record_page(self.con, record)
        return record

    def land(self, unit: Unit, rows: pa.Table | None, *, origin: str,
             result: TapResult | None, expected_rows: int | None, note: str | None = None
             ) -> PageRecord:
        """Validate `rows` against the contract and store them with the unit's manifest row,
        all or nothing. `origin` names the rows in errors; without a `result` the unit was
        known to be empty and not queried (mode 'count'); `expected_rows` is None when the
        service was not asked for a count."""
        with transaction(self.con):
            landed = 0
            if rows is not None and rows.num_rows:
                landed = self._land_rows(unit, rows, origin)
            record = self.record(
                unit, "done", rows=landed, expected_rows=expected_rows, result=result,
                checksum=self.checksums(unit.page_id).get(unit.page_id) if landed else None,
                note=note)
            if result is None:
                record = replace(record, mode="count")
            record_page(self.con, record)
        return record

    def _land_rows(self, unit: Unit, rows: pa.Table, origin: str) -> int:
        spec = self.spec
        staged = create_staging(self.con, spec.contract)
        with cleaned_up(lambda: self.con.unregister("__unit_rows")):
            inp = open_arrow(self.con, rows, origin, alias="__unit_rows")
            count = append_input(self.con, spec.contract, inp, id_column=spec.id_column)
        names = spec.columns()
        values = ["?" if c in FROM_UNIT else f'"{c}"' for c in spec.unit_columns]
        self.con.execute(
            f"INSERT INTO {spec.pull_table} ({quoted([*spec.unit_columns, *names])}) "
            f"SELECT {', '.join(values)}, {quoted(names)} FROM {staged}",
            [getattr(unit, c) for c in spec.unit_columns if c in FROM_UNIT])
        self.con.execute(f"DROP TABLE {staged}")
        return count

    def checksums(self, page_id: str | None = None) -> dict[str, str]:
        """md5 over each landed unit's row digests in digest order (one unit, or all)."""
        where, params = ("page_id = ?", [page_id]) if page_id is not None else ("TRUE", [])
        rows = self.con.execute(
            f"SELECT page_id, md5(string_agg(d, '' ORDER BY d)) FROM (SELECT page_id, "
            f"{row_digest_sql(self.spec.columns())} AS d FROM {self.spec.pull_table} "
            f"WHERE {where}) GROUP BY page_id", params).fetchall()
        return dict(rows)

    def verify(self) -> None:
        """Landed rows still match each done unit's manifest row: their count, and their
        checksum where one was recorded (cross-match chunks landed by earlier versions of
        xpipe have none)."""
        spec = self.spec
        expected = {p.page_id: p for p in load_pages(self.con, spec.pull).values()
                    if p.status == "done"}
        actual = self.checksums()
        counts = dict(self.con.execute(f"SELECT page_id, count(*) FROM {spec.pull_table} "
                                       "GROUP BY page_id").fetchall())
        for page_id in sorted(set(counts) | {k for k, p in expected.items() if p.rows}):
            record = expected.get(page_id)
            if record is None:
                raise SchemaError(f"{spec.pull_table} holds rows of {spec.noun} {page_id}, which "
                                  "the manifest does not list as done; rerun with --refresh")
            if counts.get(page_id, 0) != record.rows or (
                    record.checksum is not None and actual.get(page_id) != record.checksum):
                raise SchemaError(f"{spec.noun} {page_id}: landed rows differ from the manifest "
                                  f"({counts.get(page_id, 0)} rows vs {record.rows}); rerun "
                                  "with --refresh")

