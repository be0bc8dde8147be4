"""Fixtures for the tests against a real TAP server (GAVO DaCHS, started by `make
test-services`) and helpers shared by them."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from xpipe.core.config import Settings
from xpipe.services.csc import CSC_RELEASES, CscConfig
from xpipe.services.simbad import SimbadConfig
from xpipe.services.tap import RetryPolicy
from xpipe.warehouse.connection import connect

SKIP_REASON = ("no TAP test server configured: `make test-services` installs and starts a "
               "local GAVO DaCHS and sets XPIPE_TAP_TEST_URL (its TAP URL) and "
               "XPIPE_TAP_TEST_SIM (the simulated catalogue it serves)")

# Paging small enough that the 4,000-detection test catalogue needs splits, sync and async.
PAGE_ROWS = 900
SYNC_ROWS = 300
BAND_DEG = 30.0
FAST_RETRY = RetryPolicy(attempts=4, backoff_s=0.05, backoff_max_s=0.2)
TIMEOUT_S = 4.0  # the proxy's stall outlasts it
STALL_S = 6.0
FILE_ONLY = ("det_id", "source_file", "source_row", "detect_stack_id", "match_type")


@pytest.fixture(scope="session")
def tap_url() -> str:
    url = os.environ.get("XPIPE_TAP_TEST_URL")
    if not url:
        pytest.skip(SKIP_REASON)
    return url


@pytest.fixture(scope="session")
def served_sim(tap_url: str) -> Path:
    path = Path(os.environ.get("XPIPE_TAP_TEST_SIM", ""))
    if not (path / "detections").is_dir():
        pytest.skip(f"{SKIP_REASON} (XPIPE_TAP_TEST_SIM={path} has no detections/)")
    return path


def csc_config(url: str, release: str = "csc20", **changes: object) -> CscConfig:
    base = replace(CSC_RELEASES[release], url=url, row_limit=PAGE_ROWS,
                   sync_row_limit=SYNC_ROWS, band_deg=BAND_DEG, timeout_s=TIMEOUT_S,
                   poll_s=0.1, retry=FAST_RETRY)
    return replace(base, **changes)


def simbad_config(url: str, **changes: object) -> SimbadConfig:
    base = SimbadConfig(url=url, chunk_rows=700, timeout_s=TIMEOUT_S, poll_s=0.1,
                        retry=FAST_RETRY)
    return replace(base, **changes)


def open_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    return connect(Settings(warehouse=path), create=True)


def pull(path: Path, config: CscConfig, refresh: bool = False) -> dict[str, int]:
    from xpipe.ingest.pull import PullOptions, pull_catalogue

    con = open_warehouse(path)
    try:
        return pull_catalogue(con, config, options=PullOptions(refresh=refresh),
                              echo=lambda _m: None)
    finally:
        con.close()


def crossmatch(path: Path, config: SimbadConfig, refresh: bool = False) -> dict[str, int]:
    from xpipe.ingest.crossmatch import crossmatch as run

    con = open_warehouse(path)
    try:
        return run(con, config, refresh=refresh, echo=lambda _m: None)
    finally:
        con.close()


def rows(path: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def whole_table(path: Path, table: str = "raw.detections") -> list[tuple]:
    """Every column of every row in det_id order: equal lists mean byte-identical tables."""
    order = "det_id" if table == "raw.detections" else "name"
    return rows(path, f"SELECT * FROM {table} ORDER BY {order}")


def catalogue_rows(path: Path) -> list[tuple]:
    """The detections without the columns only a file load or only a pull has, sorted."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        cols = [r[0] for r in con.execute("DESCRIBE raw.detections").fetchall()
                if r[0] not in FILE_ONLY]
        sel = ", ".join(f'"{c}"' for c in cols)
        return con.execute(f"SELECT {sel} FROM raw.detections ORDER BY {sel}").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="session")
def reference_db(tmp_path_factory: pytest.TempPathFactory, served_sim: Path) -> Path:
    """The served catalogue loaded from its files, with the offline best match: the answer."""
    from xpipe.ingest.load import LoadRequest, load_catalogue

    path = tmp_path_factory.mktemp("reference") / "x.duckdb"
    con = open_warehouse(path)
    try:
        load_catalogue(con, LoadRequest(served_sim / "detections", served_sim / "simbad"))
    finally:
        con.close()
    return path


@pytest.fixture(scope="session")
def clean_pull(tmp_path_factory: pytest.TempPathFactory, tap_url: str) -> Path:
    """One uninterrupted pull and cross-match straight from the server."""
    path = tmp_path_factory.mktemp("clean") / "x.duckdb"
    pull(path, csc_config(tap_url))
    crossmatch(path, simbad_config(tap_url))
    return path
