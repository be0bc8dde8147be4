"""The pull's paging, splitting, retries and resumption without a server (a fake service, see
fakes.py), so that `make test` checks them everywhere; tests/services/test_dachs.py repeats the
important ones against a real TAP server."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
import requests
from conftest import open_warehouse, rows, whole_table
from fakes import FakeService, fake_catalogue
from pyvo.dal import DALFormatError, DALQueryError, DALServiceError

from xpipe.ingest.pull import Page, PullOptions, contract_names, pull_catalogue
from xpipe.services.csc import CSC_RELEASES, OBSID_END, Box, dec_bands, detections_query
from xpipe.services.tap import (
    Overflow,
    RetryPolicy,
    ServiceError,
    TapClient,
    TapServiceConfig,
    is_transient,
)
from xpipe.warehouse.contracts import SchemaError


def config(row_limit: int = 120, band_deg: float = 45.0):
    return replace(CSC_RELEASES["csc20"], row_limit=row_limit, sync_row_limit=50,
                   band_deg=band_deg)


def run(path: Path, service: FakeService, refresh: bool = False, **kw) -> dict[str, int]:
    con = open_warehouse(path)
    try:
        return pull_catalogue(con, config(**kw), source=service,
                              options=PullOptions(refresh=refresh), echo=lambda _m: None)
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
    assert "SELECT m.name, o.obsid, o.obi, o.region_id, a.detect_stack_id, m.ra, m.dec" in q
    assert "CONTAINS" not in q and "CIRCLE" not in q  # no ADQL geometry on CSC


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
