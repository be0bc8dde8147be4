"""The CSC pull and the SIMBAD cross-match against a real TAP server (GAVO DaCHS on loopback),
directly and through a proxy that breaks the traffic on a schedule.

Every test compares with an answer computed without the service: the served catalogue's own
files (`reference_db`) or an uninterrupted pull (`clean_pull`, byte for byte). Every loop is
bounded in count and time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import (
    PAGE_ROWS,
    STALL_S,
    catalogue_rows,
    crossmatch,
    csc_config,
    open_warehouse,
    pull,
    rows,
    simbad_config,
    whole_table,
)
from faultproxy import FaultProxy

from xpipe.services.tap import ServiceError
from xpipe.warehouse.contracts import SchemaError

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]


def test_pull_returns_exactly_the_served_catalogue(clean_pull: Path, reference_db: Path
                                                   ) -> None:
    got, expected = catalogue_rows(clean_pull), catalogue_rows(reference_db)
    assert len(got) == len(expected) > 3000
    assert got == expected  # no decoy row of the stack join, every value exact
    n = len(got)
    assert rows(clean_pull, "SELECT min(det_id), max(det_id), count(DISTINCT det_id) "
                            "FROM raw.detections") == [(1, n, n)]
    pages = dict(rows(clean_pull, "SELECT status, count(*) FROM meta.ingest_pages "
                                  "WHERE pull = 'csc20' GROUP BY 1"))
    assert pages["split"] >= 2 and pages["done"] >= 8  # pages above PAGE_ROWS were split
    modes = {m for (m,) in rows(clean_pull, "SELECT DISTINCT mode FROM meta.ingest_pages "
                                            "WHERE pull = 'csc20' AND status = 'done'")}
    assert {"sync", "async"} <= modes
    biggest = rows(clean_pull, "SELECT max(rows) FROM meta.ingest_pages WHERE status = 'done'")
    assert biggest[0][0] <= PAGE_ROWS
    stacks = rows(clean_pull, "SELECT count(*) FROM raw.detections WHERE detect_stack_id IS NULL")
    assert stacks == [(0,)]  # the join key comes along
    # the confidence limits come from observation_source with their values (compared above)
    limits = rows(clean_pull, "SELECT count(hard_hm), count(hard_hm_lolim), count(powlaw_gamma),"
                              " count(powlaw_gamma_hilim), count(bb_kt), count(bb_kt_lolim) "
                              "FROM raw.detections")[0]
    assert limits[0] == limits[1] > 0 and limits[2] == limits[3] > 0 and limits[4] == limits[5]


def test_match_type_is_the_served_association(clean_pull: Path, served_sim: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent / "dachs"))
    from make_tables import csc_tables

    det = pl.read_parquet(sorted((served_sim / "detections").glob("*.parquet")))
    assoc = csc_tables(det)["master_stack_assoc"]
    got = rows(clean_pull, "SELECT name, detect_stack_id, region_id, match_type "
                           "FROM raw.detections ORDER BY ALL")
    assert got == sorted(assoc.rows())
    assert {m for *_, m in got} == {"a", "u"}


def test_pull_when_the_server_refuses_join_and_count(tmp_path: Path, tap_url: str,
                                                     clean_pull: Path) -> None:
    """A server whose ADQL knows neither JOIN nor COUNT(*), like the CSC services are
    reported to be: the pull sends no JOIN, pages without counts, and gets the same table."""
    path = tmp_path / "x.duckdb"
    said: list[str] = []
    with FaultProxy(tap_url, refuse=(" JOIN ", "COUNT(")) as proxy:
        from xpipe.ingest.pull import PullOptions, pull_catalogue

        con = open_warehouse(path)
        try:
            counts = pull_catalogue(con, csc_config(proxy.url), options=PullOptions(),
                                    echo=said.append)
        finally:
            con.close()
    assert proxy.refused and all("COUNT(" in q and " JOIN " not in q.upper()
                                 for q in proxy.refused)
    assert any("refuses COUNT(*)" in m for m in said)
    assert counts["pages_split"] >= 2  # full pages were split without counts
    assert rows(path, "SELECT count(*) FROM meta.ingest_pages WHERE status = 'done' AND "
                      "expected_rows IS NOT NULL AND rows > 0") == [(0,)]
    assert rows(path, "SELECT max(rows) FROM meta.ingest_pages WHERE status = 'done'"
                )[0][0] < PAGE_ROWS
    assert whole_table(path) == whole_table(clean_pull)


def test_crossmatch_equals_offline_best_match(clean_pull: Path, reference_db: Path) -> None:
    query = ("SELECT name, main_id, otype, round(separation_arcsec, 8) FROM raw.simbad_match "
             "ORDER BY name")
    got, expected = rows(clean_pull, query), rows(reference_db, query)
    assert len(expected) > 500
    assert got == expected
    chunks = rows(clean_pull, "SELECT count(*), max(row_hi - row_lo) FROM meta.ingest_pages "
                              "WHERE pull = 'simbad' AND status = 'done'")[0]
    assert chunks[0] >= 2 and chunks[1] <= 700  # uploads went up in chunks


def test_csc21_schema_gives_the_same_rows(tmp_path: Path, tap_url: str, clean_pull: Path
                                          ) -> None:
    path = tmp_path / "x.duckdb"
    pull(path, csc_config(tap_url, "csc21", row_limit=5000, sync_row_limit=5000))
    assert catalogue_rows(path) == catalogue_rows(clean_pull)
    assert rows(path, "SELECT DISTINCT split_part(source_file, ' ', 1) FROM raw.detections"
                ) == [("csc21:csc21",)]


def test_interrupted_pull_resumes_to_the_identical_table(tmp_path: Path, tap_url: str,
                                                         clean_pull: Path) -> None:
    from xpipe.ingest.pull import CscSource, PullOptions, pull_catalogue

    config = csc_config(tap_url)
    calls = {"n": 0}

    class Interrupted(CscSource):
        def fetch(self, box, mode):  # Ctrl-C arrives during the fifth page
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return super().fetch(box, mode)

    path = tmp_path / "x.duckdb"
    con = open_warehouse(path)
    with pytest.raises(KeyboardInterrupt):
        pull_catalogue(con, config, source=Interrupted(config, config.client()),
                       options=PullOptions(), echo=lambda _m: None)
    con.close()
    landed = rows(path, "SELECT count(*) FROM meta.ingest_pages WHERE status = 'done'")[0][0]
    assert landed >= 3
    assert rows(path, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw' AND "
                      "table_name = 'detections'") == [(0,)]  # nothing half-built
    counts = pull(path, config)
    assert counts["fetched_rows"] < counts["detections"]  # resumed, not started over
    assert whole_table(path) == whole_table(clean_pull)


def test_refresh_starts_over_with_the_same_result(tmp_path: Path, tap_url: str,
                                                  clean_pull: Path) -> None:
    path = tmp_path / "x.duckdb"
    config = csc_config(tap_url, row_limit=5000, sync_row_limit=5000)
    pull(path, config)
    again = pull(path, config)
    assert again["fetched_rows"] == 0  # a finished pull is not fetched again
    fresh = pull(path, config, refresh=True)
    assert fresh["fetched_rows"] == fresh["detections"]
    assert whole_table(path) == whole_table(clean_pull)  # paging does not change det_id


@pytest.mark.parametrize("fault", ["drop", "500", "503", "stall", "cut", "truncate",
                                   "overflow"])
def test_pull_through_faults_equals_clean_pull(tmp_path: Path, tap_url: str, clean_pull: Path,
                                               fault: str) -> None:
    path = tmp_path / "x.duckdb"
    schedule = {2: fault, 3: fault, 7: fault, 12: fault}  # two in a row: a retry fails too
    start = time.monotonic()
    with FaultProxy(tap_url, schedule=schedule, stall_s=STALL_S) as proxy:
        pull(path, csc_config(proxy.url))
    assert [f for _, _, f in proxy.injected] == [fault] * 4
    assert whole_table(path) == whole_table(clean_pull)
    assert time.monotonic() - start < 240


def test_overflow_splits_the_page(tmp_path: Path, tap_url: str, clean_pull: Path) -> None:
    path = tmp_path / "x.duckdb"
    with FaultProxy(tap_url, schedule={3: "overflow"}) as proxy:
        pull(path, csc_config(proxy.url))
    notes = rows(path, "SELECT note FROM meta.ingest_pages WHERE status = 'split' "
                       "AND note LIKE '%OVERFLOW%'")
    assert len(notes) == 1
    assert whole_table(path) == whole_table(clean_pull)


def test_persistent_failure_stops_clearly_then_resumes(tmp_path: Path, tap_url: str,
                                                       clean_pull: Path) -> None:
    path = tmp_path / "x.duckdb"
    with FaultProxy(tap_url, always="503", always_from=6) as proxy, \
            pytest.raises(ServiceError, match=r"still failing after 4 attempts.*HTTP 503"):
        pull(path, csc_config(proxy.url))
    landed = rows(path, "SELECT count(*) FROM meta.ingest_pages WHERE status = 'done' AND "
                        "pull = 'csc20'")[0][0]
    assert landed >= 2
    failed = rows(path, "SELECT status, error FROM meta.runs")
    assert failed[0][0] == "failed" and "503" in failed[0][1]
    counts = pull(path, csc_config(tap_url))
    assert counts["fetched_rows"] < counts["detections"]
    assert whole_table(path) == whole_table(clean_pull)


def test_renamed_column_is_reported_and_nothing_half_loaded(tmp_path: Path, tap_url: str,
                                                            clean_pull: Path) -> None:
    path = tmp_path / "x.duckdb"
    pull(path, csc_config(tap_url, row_limit=5000, sync_row_limit=5000))
    before = whole_table(path)
    with FaultProxy(tap_url, rename=("powlaw_gamma", "pl_gamma")) as proxy, \
            pytest.raises(SchemaError, match=r"missing required column.*powlaw_gamma") as err:
        pull(path, csc_config(proxy.url), refresh=True)
    assert "nothing of this page was kept" in str(err.value)
    assert whole_table(path) == before  # raw.detections untouched
    assert rows(path, "SELECT count(*) FROM meta.ingest_pages WHERE status = 'done' AND "
                      "pull = 'csc20'") == [(0,)]
    pull(path, csc_config(tap_url), refresh=True)
    assert whole_table(path) == whole_table(clean_pull)


@pytest.mark.parametrize("fault", ["drop", "503", "stall", "cut", "overflow"])
def test_crossmatch_through_faults(tmp_path: Path, tap_url: str, clean_pull: Path,
                                   fault: str) -> None:
    path = tmp_path / "x.duckdb"
    pull(path, csc_config(tap_url, row_limit=5000, sync_row_limit=5000))
    with FaultProxy(tap_url, schedule={1: fault, 3: fault}, stall_s=STALL_S) as proxy:
        counts = crossmatch(path, simbad_config(proxy.url))
    assert len(proxy.injected) == 2
    if fault == "overflow":
        assert counts["chunks_split"] == 2
    assert whole_table(path, "raw.simbad_match") == whole_table(clean_pull, "raw.simbad_match")


def test_crossmatch_resumes_per_chunk(tmp_path: Path, tap_url: str, clean_pull: Path) -> None:
    path = tmp_path / "x.duckdb"
    pull(path, csc_config(tap_url, row_limit=5000, sync_row_limit=5000))
    with FaultProxy(tap_url, always="500", always_from=2) as proxy, \
            pytest.raises(ServiceError, match="HTTP 500"):
        crossmatch(path, simbad_config(proxy.url))
    counts = crossmatch(path, simbad_config(tap_url))
    assert rows(path, "SELECT count(*) FROM meta.ingest_pages WHERE pull = 'simbad' AND "
                      "status = 'done'")[0][0] == counts["chunks"]
    assert whole_table(path, "raw.simbad_match") == whole_table(clean_pull, "raw.simbad_match")


def test_killed_process_resumes_to_the_identical_table(tmp_path: Path, tap_url: str,
                                                       clean_pull: Path) -> None:
    """SIGKILL mid-pull (no cleanup at all), then the same command again."""
    path = tmp_path / "x.duckdb"
    env = {**os.environ, "XPIPE_WAREHOUSE": str(path), "XPIPE_PROGRESS": "0"}
    args = [sys.executable, "-m", "xpipe.cli", "warehouse", "--source", "csc20",
            "--page-rows", str(PAGE_ROWS), "--band-deg", "30"]
    with FaultProxy(tap_url, delay_s=0.3) as proxy:
        proc = subprocess.Popen([*args, "--tap-url", proxy.url], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while proxy.data_requests < 14 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the pull ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    landed = rows(path, "SELECT count(*) FROM meta.ingest_pages WHERE status = 'done'")[0][0]
    assert landed >= 2
    rerun = subprocess.run([*args, "--tap-url", tap_url], env=env, cwd=REPO, timeout=300,
                           capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming the csc20 pull" in rerun.stdout
    assert whole_table(path) == whole_table(clean_pull)
