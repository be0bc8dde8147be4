"""What an older xpipe wrote keeps working: warehouses migrate (their layout version is
recorded), and a model file exported by xpipe at e94f6c4 imports, verifies and scores as the
model the current code fits on the same catalogue."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from science_fixtures import classified_copy

from xpipe.core.config import Settings
from xpipe.core.errors import WarehouseError
from xpipe.models import file as model_file
from xpipe.models import store
from xpipe.warehouse.connection import connect
from xpipe.warehouse.contracts import contract
from xpipe.warehouse.migrations import CURRENT, LIMIT_COLUMNS_V5, UNVERSIONED

OLD_MODEL = Path(__file__).parent / "data" / "model_e94f6c4.npz"
OLD_MODEL_HASH = "a337488e4e193706606e7e121b21ca7de6e7313709a2d4505c1f2df1593fa2b1"


def _versions(path: Path) -> list[tuple[int, str]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT version, note FROM meta.schema_version ORDER BY version"
                           ).fetchall()


def test_a_new_warehouse_starts_at_the_current_version(loaded: Path) -> None:
    assert _versions(loaded) == [(CURRENT, "new warehouse")]
    connect(Settings(warehouse=loaded)).close()  # reopening records nothing more
    assert len(_versions(loaded)) == 1


def test_an_unversioned_warehouse_is_migrated_once(loaded: Path, cli) -> None:
    with duckdb.connect(str(loaded)) as con:  # as xpipe before e94f6c4's successor left it
        con.execute("DROP TABLE meta.schema_version")
        rows = con.execute("SELECT count(*) FROM raw.detections").fetchall()[0][0]
    with connect(Settings(warehouse=loaded), read_only=True) as con:  # readable as it is
        assert con.execute("SELECT count(*) FROM raw.detections").fetchall()[0][0] == rows
    cli("--warehouse", str(loaded), "sql", "SELECT 1")  # read-only: no migration yet
    with duckdb.connect(str(loaded), read_only=True) as con:
        assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = "
                               "'schema_version'").fetchall()[0][0]
    connect(Settings(warehouse=loaded)).close()
    versions = _versions(loaded)
    assert [v for v, _ in versions] == list(range(UNVERSIONED + 1, CURRENT + 1))
    connect(Settings(warehouse=loaded)).close()
    assert _versions(loaded) == versions


def _as_version(con: duckdb.DuckDBPyConnection, version: int) -> None:
    """Make a current warehouse what xpipe at layout `version` wrote: the columns later
    layouts added dropped, the version recorded."""
    dropped = {3: ["match_type", *LIMIT_COLUMNS_V5], 4: list(LIMIT_COLUMNS_V5)}[version]
    for column in dropped:
        con.execute(f"ALTER TABLE raw.detections DROP COLUMN {column}")
    con.execute("DELETE FROM meta.schema_version")
    con.execute("INSERT INTO meta.schema_version VALUES (?, now(), 'old', 'new warehouse')",
                [version])


def test_a_version_3_warehouse_gains_match_type_and_keeps_its_rows(loaded: Path) -> None:
    """raw.detections as xpipe wrote it before match_type: migrated on the next write, every
    row kept, match_type NULL; a pull or load afterwards fills it."""
    with duckdb.connect(str(loaded)) as con:  # make it what the previous xpipe wrote
        _as_version(con, 3)
        before = con.execute("SELECT * FROM raw.detections ORDER BY det_id").fetchall()
    assert CURRENT == 5 and len(before) == 40
    connect(Settings(warehouse=loaded)).close()
    with duckdb.connect(str(loaded), read_only=True) as con:
        assert con.execute("SELECT max(version) FROM meta.schema_version").fetchall() == [(5,)]
        assert con.execute(f"SELECT * EXCLUDE (match_type, {', '.join(LIMIT_COLUMNS_V5)}) "
                           "FROM raw.detections ORDER BY det_id").fetchall() == before
        assert con.execute("SELECT count(match_type) FROM raw.detections").fetchall() == [(0,)]
        columns = [r[0] for r in con.execute("DESCRIBE raw.detections").fetchall()]
    assert columns == list(contract("raw.detections").names)  # a new warehouse's order


def test_a_version_4_warehouse_gains_the_confidence_limits_as_null(loaded: Path) -> None:
    """raw.detections as xpipe wrote it before the CSC confidence limits: migrated on the next
    write, every row and value kept, the ten limit columns NULL and in the contract's order."""
    with duckdb.connect(str(loaded)) as con:
        _as_version(con, 4)
        before = con.execute("SELECT * FROM raw.detections ORDER BY det_id").fetchall()
    connect(Settings(warehouse=loaded)).close()
    with duckdb.connect(str(loaded), read_only=True) as con:
        assert con.execute("SELECT version, note FROM meta.schema_version ORDER BY version"
                           ).fetchall()[-1][0] == 5
        assert con.execute(f"SELECT * EXCLUDE ({', '.join(LIMIT_COLUMNS_V5)}) "
                           "FROM raw.detections ORDER BY det_id").fetchall() == before
        nulls = con.execute("SELECT " + ", ".join(f"count({c})" for c in LIMIT_COLUMNS_V5)
                            + " FROM raw.detections").fetchall()[0]
        columns = [r[0] for r in con.execute("DESCRIBE raw.detections").fetchall()]
    assert nulls == (0,) * len(LIMIT_COLUMNS_V5)
    assert columns == list(contract("raw.detections").names)
    assert set(LIMIT_COLUMNS_V5) <= set(columns)


def test_a_warehouse_from_a_newer_xpipe_is_refused(loaded: Path, cli) -> None:
    with duckdb.connect(str(loaded)) as con:
        con.execute("INSERT INTO meta.schema_version VALUES (?, now(), '9.9', 'future')",
                    [CURRENT + 1])
    for read_only in (True, False):
        with pytest.raises(WarehouseError, match=f"layout version {CURRENT + 1}"):
            connect(Settings(warehouse=loaded), read_only=read_only)
    result = cli("--warehouse", str(loaded), "summary", expect_ok=False)
    assert result.exit_code == 1 and "upgrade xpipe" in result.output


@pytest.fixture(scope="module")
def science_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classified_copy(tmp_path_factory, "compatibility")


def test_old_model_file_verifies_and_equals_todays_fit(science_warehouse: Path) -> None:
    old = model_file.read_file(OLD_MODEL)  # checks every member and the content hash
    assert old.content_hash == OLD_MODEL_HASH
    with connect(Settings(warehouse=science_warehouse), read_only=True) as con:
        today = store.load(con)
    assert (old.classes, old.features, old.selection) == (today.classes, today.features,
                                                          today.selection)
    assert old.params == today.params
    for a, b in zip(old.scaling, today.scaling, strict=True):
        assert (a.feature, a.position, a.transform) == (b.feature, b.position, b.transform)
        for field in ("min_nonzero", "log_offset", "min_value", "max_value"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or x == pytest.approx(y, rel=1e-12), (a, field)
    for name, array in old.arrays().items():
        np.testing.assert_allclose(array, today.arrays()[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


def test_old_model_file_scores_as_the_batch_run(science_warehouse: Path, cli,
                                                tmp_path: Path) -> None:
    sample = tmp_path / "sample.csv"
    cli("--warehouse", str(science_warehouse), "sql", "--out", str(sample),
        "SELECT r.* EXCLUDE (det_id, source_file, source_row) FROM raw.detections r "
        "JOIN results.detection_class d USING (det_id) WHERE d.pred_class IS NOT NULL "
        "ORDER BY r.det_id LIMIT 500")
    out = tmp_path / "scored.csv"
    cli("--warehouse", str(science_warehouse), "classify-new", str(sample), "--model",
        str(OLD_MODEL), "--out", str(out))
    scored = pl.read_csv(out)
    with duckdb.connect(str(science_warehouse), read_only=True) as con:
        batch = con.sql("SELECT r.name, r.obsid, r.obi, r.region_id, d.* EXCLUDE (name, obsid) "
                        "FROM raw.detections r JOIN results.detection_class d USING (det_id) "
                        "WHERE d.pred_class IS NOT NULL ORDER BY r.det_id LIMIT 500").pl()
    joined = batch.join(scored, on=["name", "obsid", "obi", "region_id"], suffix="_new")
    assert joined.height == 500
    assert (joined["pred_class"] == joined["pred_class_new"]).all()
    assert (joined["cluster"] == joined["cluster_new"]).all()
    for name in ("QSO", "AGN", "YSO", "HMXB", "anomaly_p", "log_likelihood"):
        diff = (joined[name] - joined[f"{name}_new"]).abs().max()
        assert diff is not None and diff <= 1e-9, (name, diff)
