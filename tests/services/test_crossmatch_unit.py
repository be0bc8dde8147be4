"""The SIMBAD cross-match's chunking, splitting and resumption, and what the CSC pull and the
cross-match share (paging.ResumablePull), without a server (fakes.py); test_dachs.py repeats
the important cases against a real TAP server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from astropy.table import MaskedColumn, Table
from conftest import open_warehouse, rows, whole_table
from fakes import FakeService, FakeSimbad, fake_catalogue, fake_simbad, separations_arcsec

from xpipe.ingest.crossmatch import crossmatch
from xpipe.ingest.pull import PullOptions, contract_names, pull_catalogue
from xpipe.services.csc import CSC_RELEASES
from xpipe.services.simbad import SimbadConfig, upload_table
from xpipe.services.votable import VOTableColumnError, astropy_to_arrow
from xpipe.warehouse.contracts import SchemaError

FRAME = fake_catalogue()
OBJECTS = fake_simbad(FRAME)


def pull(path: Path, release: str = "csc20", refresh: bool = False,
         service: FakeService | None = None) -> dict[str, int]:
    config = replace(CSC_RELEASES[release], row_limit=120, sync_row_limit=50, band_deg=45.0)
    con = open_warehouse(path)
    try:
        return pull_catalogue(con, config, source=service or FakeService(FRAME, 120),
                              options=PullOptions(refresh=refresh), echo=lambda _m: None)
    finally:
        con.close()


def match(path: Path, source: FakeSimbad, chunk_rows: int = 40, refresh: bool = False,
          echo=lambda _m: None) -> dict[str, int]:
    con = open_warehouse(path)
    try:
        return crossmatch(con, SimbadConfig(url="http://fake", chunk_rows=chunk_rows),
                          source=source, refresh=refresh, echo=echo)
    finally:
        con.close()


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pulled") / "x.duckdb"
    pull(path)
    return path


@pytest.fixture
def warehouse(pulled: Path, tmp_path: Path) -> Path:
    path = tmp_path / "x.duckdb"
    path.write_bytes(pulled.read_bytes())
    return path


@pytest.fixture(scope="module")
def clean_match(tmp_path_factory: pytest.TempPathFactory, pulled: Path) -> list[tuple]:
    path = tmp_path_factory.mktemp("matched") / "x.duckdb"
    path.write_bytes(pulled.read_bytes())
    match(path, FakeSimbad(OBJECTS))
    return whole_table(path, "raw.simbad_match")


def brute_force_best(path: Path) -> dict[str, tuple[str, float]]:
    sources = rows(path, "SELECT name, arg_min(ra, det_id), arg_min(dec, det_id) "
                         "FROM raw.detections GROUP BY name ORDER BY name")
    ra, dec = (np.array([s[k] for s in sources]) for k in (1, 2))
    sep = separations_arcsec(ra[:, None], dec[:, None], OBJECTS["ra"].to_numpy()[None, :],
                             OBJECTS["dec"].to_numpy()[None, :])
    ids = OBJECTS["main_id"].to_list()
    best = {}
    for i, (name, _, _) in enumerate(sources):
        within = [(sep[i, j], ids[j]) for j in np.nonzero(sep[i] <= 1.0)[0]]
        if within:
            s, main_id = min(within)
            best[name] = (main_id, s)
    return best


def test_crossmatch_equals_brute_force_best_match(warehouse: Path) -> None:
    source = FakeSimbad(OBJECTS)
    counts = match(warehouse, source)
    expected = brute_force_best(warehouse)
    got = {n: (m, s) for n, m, _, s in rows(warehouse, "SELECT name, main_id, otype, "
                                                       "separation_arcsec FROM raw.simbad_match")}
    assert 50 < len(expected) < counts["sources"]  # matched and unmatched sources
    assert set(got) == set(expected)
    assert all(got[n][0] == m and abs(got[n][1] - s) < 1e-6 for n, (m, s) in expected.items())
    assert counts["chunks"] == 5 and max(source.uploaded) <= 40
    assert counts["matched_sources"] == len(expected)
    chunks = rows(warehouse, "SELECT count(*), count(checksum) FROM meta.ingest_pages "
                             "WHERE pull = 'simbad' AND status = 'done' AND rows > 0")
    assert chunks[0][0] == chunks[0][1] > 0  # verified like the CSC pull's pages


def test_overflow_splits_chunks_and_gives_the_same_matches(warehouse: Path,
                                                           clean_match: list[tuple]) -> None:
    counts = match(warehouse, FakeSimbad(OBJECTS, overflow_on={1, 3}))
    assert counts["chunks_split"] == 2
    notes = rows(warehouse, "SELECT page_id FROM meta.ingest_pages WHERE pull = 'simbad' "
                            "AND status = 'split' ORDER BY page_id")
    assert notes == [("00000",), ("00000.1",)]  # depth first: a half is split in turn
    assert whole_table(warehouse, "raw.simbad_match") == clean_match


def test_interrupted_crossmatch_resumes_to_the_same_table(warehouse: Path,
                                                          clean_match: list[tuple]) -> None:
    for stop in (3, 2):  # interrupted twice, each time some chunks further
        with pytest.raises(KeyboardInterrupt):
            match(warehouse, FakeSimbad(OBJECTS, interrupt_on=stop))
    said: list[str] = []
    source = FakeSimbad(OBJECTS)
    counts = match(warehouse, source, echo=said.append)
    assert said == ["resuming the cross-match: 3 chunks already in the warehouse"]
    assert source.calls == 2 and counts["chunks"] == 5  # resumed, not started over
    assert whole_table(warehouse, "raw.simbad_match") == clean_match


def test_other_chunking_starts_the_crossmatch_over(warehouse: Path,
                                                   clean_match: list[tuple]) -> None:
    with pytest.raises(KeyboardInterrupt):
        match(warehouse, FakeSimbad(OBJECTS, interrupt_on=3))
    said: list[str] = []
    source = FakeSimbad(OBJECTS)
    match(warehouse, source, chunk_rows=70, echo=said.append)
    assert said == ["sources, radius or chunking changed since the last cross-match: "
                    "starting it over"]
    assert source.uploaded == [70, 70, 39]
    assert whole_table(warehouse, "raw.simbad_match") == clean_match


def test_tampered_landed_rows_are_caught(warehouse: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        match(warehouse, FakeSimbad(OBJECTS, interrupt_on=4))
    con = open_warehouse(warehouse)
    con.execute("UPDATE raw.simbad_match__pull SET main_id = 'X' WHERE page_id = '00001'")
    con.close()
    with pytest.raises(SchemaError, match=r"chunk 00001: landed rows differ.*--refresh"):
        match(warehouse, FakeSimbad(OBJECTS))
    match(warehouse, FakeSimbad(OBJECTS), refresh=True)


def test_pull_tables_keep_the_layout_earlier_versions_wrote(warehouse: Path) -> None:
    """An interrupted pull of an earlier xpipe resumes: its pull tables have these columns."""
    match(warehouse, FakeSimbad(OBJECTS))
    layout = {t: [r[0] for r in rows(warehouse, f"DESCRIBE {t}")]
              for t in ("raw.detections__pull", "raw.simbad_match__pull")}
    assert layout == {
        "raw.detections__pull": ["page_id", "top_index", "source_row", *contract_names()],
        "raw.simbad_match__pull": ["page_id", "name", "main_id", "otype", "separation_arcsec"],
    }


def test_pull_table_of_another_layout_asks_for_refresh(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    with pytest.raises(KeyboardInterrupt):
        pull(path, service=FakeService(FRAME, 120, interrupt_on=3))
    con = open_warehouse(path)
    con.execute("ALTER TABLE raw.detections__pull DROP COLUMN source_row")
    con.close()
    with pytest.raises(SchemaError, match=r"raw.detections__pull has columns.*--refresh"):
        pull(path)
    assert pull(path, refresh=True)["detections"] == FRAME.height


def test_releases_sharing_the_pull_table_do_not_mix(tmp_path: Path) -> None:
    """csc20 and csc21 land in the same raw.detections__pull: a new pull of one forgets the
    other's pages instead of failing at the end on rows it did not land."""
    path = tmp_path / "x.duckdb"
    pull(path, "csc20")
    other = FRAME.head(400)
    counts = pull(path, "csc21", service=FakeService(other, 120))
    assert counts["detections"] == 400
    assert rows(path, "SELECT DISTINCT pull FROM meta.ingest_pages") == [("csc21",)]
    counts = pull(path, "csc20")
    assert counts["detections"] == counts["fetched_rows"] == FRAME.height


def test_votable_conversion_keeps_nulls_and_refuses_arrays() -> None:
    table = Table({"name": MaskedColumn(["a", "b"], mask=[False, True]),
                   "x": MaskedColumn([1.5, 2.0], mask=[True, False]),
                   "n": np.array([b"p", b"q"])})
    arrow = astropy_to_arrow(table)
    assert arrow.to_pylist() == [{"name": "a", "x": None, "n": "p"},
                                 {"name": None, "x": 2.0, "n": "q"}]
    with pytest.raises(VOTableColumnError, match="'v' is an array"):
        astropy_to_arrow(Table({"v": np.zeros((2, 3))}))
    upload = upload_table(pa.table({"dec": [1.0], "name": ["2CXO J1"], "ra": [2.0]}))
    assert upload.colnames == ["name", "ra", "dec"] and upload["name"].dtype.kind == "S"
    assert pl.from_arrow(astropy_to_arrow(upload)).rows() == [("2CXO J1", 2.0, 1.0)]
