"""The pull's paging, splitting, retries and resumption without a server (a fake service, see
fakes.py), so that `make test` checks them everywhere; tests/services/test_dachs.py repeats the
important ones against a real TAP server."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import requests
from conftest import open_warehouse, rows, whole_table
from fakes import FakeService, fake_catalogue
from faultproxy import FaultProxy
from pyvo.dal import DALFormatError, DALQueryError, DALServiceError

from xpipe.ingest.pull import CscSource, Page, PullOptions, contract_names, pull_catalogue
from xpipe.services.csc import (
    CSC_RELEASES,
    OBSID_END,
    Box,
    count_query,
    dec_bands,
    detections_query,
)
from xpipe.services.tap import (
    Overflow,
    QueryRefusedError,
    RetryPolicy,
    ServiceError,
    TapClient,
    TapResult,
    TapServiceConfig,
    is_transient,
)
from xpipe.warehouse.contracts import SchemaError


def config(row_limit: int = 120, band_deg: float = 45.0):
    return replace(CSC_RELEASES["csc20"], row_limit=row_limit, sync_row_limit=50,
                   band_deg=band_deg)


def run(path: Path, service: FakeService, refresh: bool = False,
        echo: Callable[[str], None] = lambda _m: None, **kw) -> dict[str, int]:
    con = open_warehouse(path)
    try:
        return pull_catalogue(con, config(**kw), source=service,
                              options=PullOptions(refresh=refresh), echo=echo)
    finally:
        con.close()


def test_bands_cover_the_sky_without_overlap() -> None:
    bands = dec_bands(7.0)
    assert bands[0].dec_lo == -90 and bands[-1].dec_hi == 90
    assert all(a.dec_hi == b.dec_lo for a, b in itertools.pairwise(bands))
    assert "m.dec <= 90.0" in bands[-1].where() and "m.dec < " in bands[0].where()
    with pytest.raises(ValueError):
        dec_bands(0)


def test_split_halves_the_longer_side_then_obsid() -> None:
    a, b = Box(0, 10, 0, 360).split()
    assert (a.ra_hi, b.ra_lo) == (180, 180)  # 360° of RA is longer than 10° of Dec
    a, b = Box(80, 90, 0, 20).split()  # near the pole 20° of RA is short
    assert (a.dec_hi, b.dec_lo) == (85, 85)
    tiny = Box(10, 10 + 5e-5, 20, 20 + 5e-5)
    a, b = tiny.split()
    assert (a.obsid_hi, b.obsid_lo) == (OBSID_END // 2, OBSID_END // 2)
    assert "o.obsid >= 1073741824" in b.where()
    assert not Box(10, 10 + 5e-5, 20, 20 + 5e-5, 7, 8).splittable()
    with pytest.raises(ServiceError, match="cannot be split"):
        Page("000", 0, Box(10, 10 + 5e-5, 20, 20 + 5e-5, 7, 8)).children()


def test_query_uses_the_stack_join_and_master_position() -> None:
    q = detections_query("csc21", Box(-10, 0), contract_names())
    for table in ("master_source", "master_stack_assoc", "stack_source",
                  "stack_observation_assoc", "observation_source"):
        assert f"csc21.{table}" in q
    assert "SELECT DISTINCT m.name, o.obsid, o.obi, o.region_id, a.detect_stack_id, m.ra, " \
           "m.dec" in q
    limits = ", ".join(f"o.{f}_{side}" for f in ("hard_hm", "hard_hs", "hard_ms",
                                                   "powlaw_gamma", "bb_kt")
                       for side in ("lolim", "hilim"))
    # the last contract columns: the association's match_type, then the confidence limits of
    # the per-observation table (the CSC 2.0 and 2.1 column names)
    assert q.endswith(f", a.match_type, {limits} " + q[q.index("FROM "):])
    assert "CONTAINS" not in q and "CIRCLE" not in q  # no ADQL geometry on CSC


def test_queries_have_the_documented_form() -> None:
    """A comma-separated FROM list with every join condition in WHERE: no JOIN at all."""
    for q in (detections_query("csc2", Box(-10, 0, 5, 6), contract_names()),
              count_query("csc2", Box(-10, 0)), count_query("csc2")):
        assert " JOIN " not in q.upper() and " ON " not in q.upper()
        from_list = q[q.index("FROM ") + 5:q.index(" WHERE ")]
        assert from_list == ("csc2.master_source AS m, csc2.master_stack_assoc AS a, "
                             "csc2.stack_source AS s, csc2.stack_observation_assoc AS b, "
                             "csc2.observation_source AS o")
        where = q[q.index(" WHERE ") + 7:]
        for condition in ("a.name = m.name", "s.detect_stack_id = a.detect_stack_id",
                          "s.region_id = a.region_id", "b.detect_stack_id = s.detect_stack_id",
                          "b.region_id = s.region_id", "o.obsid = b.obsid", "o.obi = b.obi",
                          "o.region_id = b.region_id"):
            assert condition in where.split(" AND ")
    assert count_query("csc2").endswith("o.region_id = b.region_id")


def test_transient_errors_are_told_from_refusals() -> None:
    assert is_transient(requests.ConnectionError("reset"))
    assert is_transient(requests.ReadTimeout("slow"))
    assert is_transient(DALServiceError("gateway", code=503))
    assert is_transient(DALServiceError.from_except(requests.ConnectionError("aborted"), "u"))
    assert is_transient(DALFormatError(ValueError("no element found")))
    assert not is_transient(DALServiceError("not found", code=404))
    assert not is_transient(DALQueryError("column hard_hm not found"))
    assert not is_transient(Overflow("truncated"))
    assert RetryPolicy(5, 1.0, 5.0).delay(1) == 1.0
    assert [RetryPolicy(5, 1.0, 5.0).delay(k) for k in (2, 3, 4)] == [2.0, 4.0, 5.0]


def test_client_retries_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    client = TapClient(TapServiceConfig("http://127.0.0.1:9/tap",
                                        retry=RetryPolicy(3, 0.5, 10.0)), sleep=waits.append)
    calls = {"n": 0}

    def flaky(*_a):
        calls["n"] += 1
        if calls["n"] < 3:
            raise requests.ConnectionError("connection reset by peer")
        return pa.table({"n": [42]})

    monkeypatch.setattr(client, "_once", flaky)
    assert client.count("SELECT COUNT(*) FROM t") == 42
    assert waits == [0.5, 1.0]
    monkeypatch.setattr(client, "_once", lambda *_a: (_ for _ in ()).throw(
        DALServiceError("unavailable", code=503)))
    with pytest.raises(ServiceError, match=r"still failing after 3 attempts.*HTTP 503"):
        client.count("SELECT 1")
    calls["n"] = 0

    def refused(*_a):
        calls["n"] += 1
        raise DALQueryError("Could not resolve column hard_hmx")

    monkeypatch.setattr(client, "_once", refused)
    with pytest.raises(ServiceError, match=r"refused the query.*hard_hmx"):
        client.count("SELECT 1")
    assert calls["n"] == 1  # a refused query is not retried


def test_pull_splits_until_pages_fit(tmp_path: Path) -> None:
    frame = fake_catalogue()
    path = tmp_path / "x.duckdb"
    counts = run(path, FakeService(frame, row_limit=120))
    assert counts["detections"] == frame.height
    got = rows(path, "SELECT name, obsid, region_id, hard_hm FROM raw.detections ORDER BY det_id")
    expected = frame.sort("name", "obsid", "region_id").select(
        "name", "obsid", "region_id", "hard_hm").rows()
    assert sorted(got) == sorted(expected)
    # one source holds 60 detections; a page above 120 rows was split, none kept above it
    assert rows(path, "SELECT max(rows) FROM meta.ingest_pages WHERE status = 'done'")[0][0] <= 120
    assert counts["pages_split"] >= 3
    # det_id follows band order, then name
    ordered = rows(path, "SELECT source_file, name FROM raw.detections ORDER BY det_id")
    assert ordered == sorted(ordered)


def test_single_source_above_the_limit_is_paged_by_obsid(tmp_path: Path) -> None:
    frame = fake_catalogue()
    counts = run(tmp_path / "x.duckdb", FakeService(frame, row_limit=40))
    assert counts["detections"] == frame.height
    obsid_pages = rows(tmp_path / "x.duckdb", "SELECT count(*) FROM meta.ingest_pages "
                                              "WHERE bounds LIKE '%obsid%'")[0][0]
    assert obsid_pages >= 2


def test_overflow_and_short_pages_are_split_not_kept(tmp_path: Path) -> None:
    frame = fake_catalogue()
    clean = tmp_path / "clean.duckdb"
    run(clean, FakeService(frame, 120))
    faulty = tmp_path / "faulty.duckdb"
    service = FakeService(frame, 120, overflow_on={2, 5}, short_on={3, 8})
    run(faulty, service)
    notes = [n for (n,) in rows(faulty, "SELECT note FROM meta.ingest_pages WHERE note IS "
                                        "NOT NULL")]
    assert sum("OVERFLOW" in n for n in notes) == 2
    assert sum("COUNT(*)" in n and "returned" in n for n in notes) == 2
    assert whole_table(faulty) == whole_table(clean)  # byte-identical whatever the paging


def test_changed_column_type_is_reported_and_nothing_half_loaded(tmp_path: Path) -> None:
    frame = fake_catalogue()
    path = tmp_path / "x.duckdb"
    run(path, FakeService(frame, 5000))
    before = whole_table(path)
    with pytest.raises(SchemaError, match=r"column 'hard_hm': expected DOUBLE, found VARCHAR"):
        run(path, FakeService(frame, 120, retype_on={3}), refresh=True)
    assert whole_table(path) == before
    landed = rows(path, "SELECT count(*) FROM raw.detections__pull")[0][0]
    done = rows(path, "SELECT coalesce(sum(rows), 0) FROM meta.ingest_pages "
                      "WHERE status = 'done'")[0][0]
    assert landed == done  # the bad page left neither rows nor a manifest entry


def test_interrupt_then_resume_is_identical(tmp_path: Path) -> None:
    frame = fake_catalogue()
    clean = tmp_path / "clean.duckdb"
    run(clean, FakeService(frame, 120))
    path = tmp_path / "x.duckdb"
    for stop in (4, 3):  # interrupted twice, each time some pages further
        with pytest.raises(KeyboardInterrupt):
            run(path, FakeService(frame, 120, interrupt_on=stop))
    counts = run(path, FakeService(frame, 120))
    assert 0 < counts["fetched_rows"] < frame.height  # resumed, not started over
    assert whole_table(path) == whole_table(clean)
    status = rows(path, "SELECT status FROM meta.runs ORDER BY started_at")
    assert [s for (s,) in status] == ["failed", "failed", "ok"]


def test_other_paging_on_resume_needs_refresh(tmp_path: Path) -> None:
    frame = fake_catalogue()
    path = tmp_path / "x.duckdb"
    with pytest.raises(KeyboardInterrupt):
        run(path, FakeService(frame, 120, interrupt_on=3))
    with pytest.raises(SchemaError, match="--refresh"):
        run(path, FakeService(frame, 120), band_deg=30.0)
    run(path, FakeService(frame, 120), refresh=True, band_deg=30.0)
    assert rows(path, "SELECT count(*) FROM raw.detections")[0][0] == frame.height


def test_pull_drops_what_was_derived_from_the_old_detections(tmp_path: Path) -> None:
    from xpipe.models.store import ensure_tables
    from xpipe.warehouse.contracts import create_table

    path = tmp_path / "x.duckdb"
    run(path, FakeService(fake_catalogue(), row_limit=120))
    con = open_warehouse(path)
    try:
        ensure_tables(con)  # the stored model versions
        for table in ("model.reference_stats", "results.detection_class",
                      "results.new_detection_class", "results.bic_scores"):
            create_table(con, table)
    finally:
        con.close()
    counts = run(path, FakeService(fake_catalogue(seed=4), row_limit=120), refresh=True)
    assert counts["derived_tables_reset"] == 4
    left = {f"{s}.{t}" for s, t in rows(path, "SELECT schema_name, table_name FROM "
                                              "duckdb_tables() WHERE schema_name IN "
                                              "('model', 'results')")}
    assert left == {"model.versions", "model.version_scaling", "model.version_components",
                    "model.version_reference_stats"}


def test_refused_count_pages_without_counts(tmp_path: Path) -> None:
    """A service that refuses COUNT(*): pages are kept only when they return fewer rows than
    MAXREC without OVERFLOW, split otherwise, and the table is the counted pull's."""
    frame = fake_catalogue()
    clean = tmp_path / "clean.duckdb"
    run(clean, FakeService(frame, 120))
    path = tmp_path / "x.duckdb"
    said: list[str] = []
    service = FakeService(frame, 120, refuse_count=True, overflow_on={4})
    counts = run(path, service, echo=said.append)
    assert service.counts == 0  # refused once for the whole pull, never asked per page
    assert any("refuses COUNT(*)" in m and "fewer rows than MAXREC (120)" in m for m in said)
    assert whole_table(path) == whole_table(clean)
    assert counts["pages_split"] >= 3
    done = rows(path, "SELECT rows, expected_rows, note FROM meta.ingest_pages "
                      "WHERE pull = 'csc20' AND status = 'done'")
    assert all(r < 120 and e is None and "not counted" in n for r, e, n in done)
    split = [n for (n,) in rows(path, "SELECT note FROM meta.ingest_pages WHERE status = "
                                      "'split'")]
    assert all("not counted" in n for n in split) and any("OVERFLOW" in n for n in split)
    assert rows(path, "SELECT count(*) FROM meta.ingest_pages WHERE page_id = '*'") == [(0,)]


def test_a_full_page_without_count_is_split(tmp_path: Path) -> None:
    """Exactly MAXREC rows and no OVERFLOW: maybe cut at MAXREC, so split. (A page that
    silently loses rows below MAXREC cannot be told without a count: docs/services.md.)"""
    frame = fake_catalogue().head(60)  # one source with 60 detections
    path = tmp_path / "x.duckdb"
    run(path, FakeService(frame, 60, refuse_count=True), row_limit=60)
    assert rows(path, "SELECT count(*) FROM raw.detections")[0][0] == frame.height
    notes = [n for (n,) in rows(path, "SELECT note FROM meta.ingest_pages WHERE status = "
                                      "'split'")]
    assert any(n.startswith("60 rows returned, the page limit 60") for n in notes)
    assert rows(path, "SELECT max(rows) FROM meta.ingest_pages WHERE status = 'done'"
                )[0][0] < 60


class RefusingClient:
    """A TAP client whose service refuses queries containing given words, like a parser that
    knows neither JOIN nor COUNT."""

    def __init__(self, refuse: tuple[str, ...]) -> None:
        self.refuse, self.queries = refuse, []

    def query(self, adql: str, **_kw):
        self.queries.append(adql)
        if any(word in adql for word in self.refuse):
            raise QueryRefusedError(f"refused the query: syntax error near {self.refuse}")
        return TapResult(pa.table({"name": ["2CXO J000000.0+000000"]}), "sync", 1, 0.0)

    def count(self, adql: str) -> int:
        self.query(adql)
        return 1


def test_csc_source_sends_no_join_and_reports_a_refused_count() -> None:
    client = RefusingClient((" JOIN ", "COUNT("))
    source = CscSource(CSC_RELEASES["csc20"], client)  # type: ignore[arg-type]
    assert source.fetch(Box(0, 2), "sync").table.num_rows == 1  # not refused: no JOIN
    with pytest.raises(QueryRefusedError):
        source.count(None)
    assert "SELECT DISTINCT" in client.queries[0]


def test_the_fault_proxy_refuses_like_a_parser_without_join_and_count() -> None:
    """What tests/services/test_dachs.py relies on: the proxy's refusal reaches the pull as a
    refused query (not retried), sync and async, and other queries pass."""
    with FaultProxy("http://127.0.0.1:9/tap", refuse=(" JOIN ", "COUNT(")) as proxy:
        client = TapServiceConfig(proxy.url, retry=RetryPolicy(3, 0.01, 0.01)).client(
            sleep=lambda _s: None)
        for adql, mode in (("SELECT COUNT(*) AS n FROM t", "sync"),
                           ("SELECT a.x FROM t AS a JOIN u AS b ON a.x = b.x", "async")):
            with pytest.raises(QueryRefusedError, match="refused the query"):
                client.query(adql, mode=mode)
        assert len(proxy.refused) == 2 and proxy.data_requests == 0
        with pytest.raises(ServiceError, match="still failing after 3 attempts"):
            client.query("SELECT x FROM t")  # passed on (to a closed port)


def test_match_type_is_kept_and_one_row_per_detection(tmp_path: Path) -> None:
    """match_type comes along; a detection the service returns twice, once per match type,
    is kept once, as 'a' (ambiguous)."""
    frame = fake_catalogue().with_columns(
        match_type=pl.when(pl.int_range(pl.len()) % 5 == 0).then(pl.lit("a"))
        .otherwise(pl.lit("u")))
    twice = frame.head(3).with_columns(match_type=pl.lit("u"))
    frame = frame.with_columns(
        match_type=pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("a"))
        .otherwise(pl.col("match_type")))
    path = tmp_path / "x.duckdb"
    counts = run(path, FakeService(pl.concat([frame, twice]), 5000))
    assert counts["detections"] == frame.height
    got = rows(path, "SELECT name, obsid, obi, region_id, match_type FROM raw.detections")
    assert sorted(got) == sorted(frame.select("name", "obsid", "obi", "region_id",
                                              "match_type").rows())
