"""Bad input stops the load with a clear message, and the warehouse is left as it was."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from factories import detections_frame, simbad_frame, with_limits


def snapshot(path: Path) -> dict[str, list]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM raw.{t} ORDER BY ALL").fetchall()
                for t in ("detections", "simbad", "simbad_match")}
    finally:
        con.close()


@pytest.fixture
def loaded(tmp_path: Path, cli, warehouse_path: Path) -> dict[str, list]:
    """A warehouse holding a good catalogue; returns its contents."""
    good = tmp_path / "good.parquet"
    frame = detections_frame()
    frame.write_parquet(good)
    simbad_frame(frame).write_parquet(tmp_path / "simbad.parquet")
    cli("warehouse", "--source", str(good), "--labels", str(tmp_path / "simbad.parquet"))
    before = snapshot(warehouse_path)
    assert len(before["detections"]) == 20 and len(before["simbad_match"]) == 5
    return before


def load_fails(cli, path: Path, *extra: str) -> str:
    result = cli("warehouse", "--source", str(path), *extra, expect_ok=False)
    assert result.exit_code == 1, result.output
    return result.output


def test_missing_column(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    bad = tmp_path / "no_gamma.parquet"
    detections_frame().drop("powlaw_gamma").write_parquet(bad)
    message = load_fails(cli, bad, "--labels", "none")
    assert f"{bad}: missing required column(s) for raw.detections: powlaw_gamma: DOUBLE" in message
    assert snapshot(warehouse_path) == loaded


def test_wrong_type_in_parquet(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    bad = tmp_path / "text_ra.parquet"
    detections_frame().with_columns(pl.col("ra").cast(pl.Utf8)).write_parquet(bad)
    message = load_fails(cli, bad)
    assert "column 'ra': expected DOUBLE, found VARCHAR" in message
    assert snapshot(warehouse_path) == loaded


def csv_with_cell(path: Path, column: str, *, row: int, text: str,
                  frame: pl.DataFrame | None = None) -> Path:
    """Valid detections (`frame`, default the factory's) written as CSV, with the 0-based
    `row`'s `column` replaced by `text`."""
    frame = (detections_frame() if frame is None else frame).with_columns(
        pl.col(column).cast(pl.Utf8))
    frame.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(text))
                       .otherwise(pl.col(column)).alias(column)).write_csv(path)
    return path


def test_wrong_type_in_csv_names_the_row(tmp_path: Path, cli, loaded, warehouse_path: Path
                                         ) -> None:
    bad = csv_with_cell(tmp_path / "bad.csv", "bb_kt", row=6, text="hot")
    message = load_fails(cli, bad)
    assert f"{bad}, row 7, column 'bb_kt': expected DOUBLE, found 'hot'" in message
    assert snapshot(warehouse_path) == loaded


def test_a_confidence_limit_is_typed_like_any_column(tmp_path: Path, cli, loaded,
                                                      warehouse_path: Path) -> None:
    """The optional limit columns, when a file has them, are validated like the others: text
    in one stops the load, naming the row and column, and nothing changes."""
    bad = csv_with_cell(tmp_path / "bad.csv", "powlaw_gamma_hilim", row=3, text="wide",
                        frame=with_limits(detections_frame()))
    message = load_fails(cli, bad)
    assert f"{bad}, row 4, column 'powlaw_gamma_hilim': expected DOUBLE, found 'wide'" in message
    assert snapshot(warehouse_path) == loaded


def test_fractional_obsid(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    bad = tmp_path / "float_obsid.parquet"
    frame = detections_frame().with_columns(pl.col("obsid").cast(pl.Float64))
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(1002.5)
                               .otherwise(pl.col("obsid")).alias("obsid"))
    frame.write_parquet(bad)
    message = load_fails(cli, bad)
    assert "row 3, column 'obsid': expected INTEGER, found '1002.5'" in message


def test_infinity_is_an_error_nan_is_null(tmp_path: Path, cli, loaded, warehouse_path: Path
                                          ) -> None:
    bad = tmp_path / "inf.parquet"
    frame = detections_frame().with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(float("inf")).otherwise(pl.col("var_mean_b"))
        .alias("var_mean_b"))
    frame.write_parquet(bad)
    message = load_fails(cli, bad)
    assert f"{bad}, row 5, column 'var_mean_b' is infinite" in message
    assert snapshot(warehouse_path) == loaded

    nan = tmp_path / "nan.parquet"
    frame = detections_frame().with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(float("nan")).otherwise(pl.col("var_mean_b"))
        .alias("var_mean_b"))
    frame.write_parquet(nan)
    cli("warehouse", "--source", str(nan), "--labels", "none")
    con = duckdb.connect(str(warehouse_path), read_only=True)
    values = con.execute("SELECT var_mean_b FROM raw.detections WHERE det_id = 5").fetchall()
    con.close()
    assert values == [(None,)]  # NaN is the VOTable null of floating-point fields


def test_null_in_required_value(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    bad = tmp_path / "no_name.parquet"
    frame = detections_frame().with_columns(
        pl.when(pl.int_range(pl.len()) == 9).then(None).otherwise(pl.col("name")).alias("name"))
    frame.write_parquet(bad)
    message = load_fails(cli, bad)
    assert f"{bad}, row 10, column 'name' is empty but required" in message
    assert snapshot(warehouse_path) == loaded


def test_empty_file(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    detections_frame().head(0).write_parquet(empty)
    message = load_fails(cli, empty)
    assert f"{empty}: holds no data rows" in message
    header_only = tmp_path / "empty.csv"
    header_only.write_text(",".join(detections_frame().columns) + "\n")
    message = load_fails(cli, header_only)
    assert "holds no data rows" in message
    assert snapshot(warehouse_path) == loaded


def test_duplicate_detection(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    bad = tmp_path / "dup.parquet"
    frame = detections_frame()
    pl.concat([frame, frame.slice(3, 1)]).write_parquet(bad)
    message = load_fails(cli, bad)
    assert "duplicate detection key (name='2CXO J000001.0+000001', obsid=1003, obi=0, " \
           f"region_id=4) at {bad} row 4 and {bad} row 21" in message
    assert snapshot(warehouse_path) == loaded


def test_unreadable_file(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    bad = tmp_path / "junk.parquet"
    bad.write_bytes(b"not parquet at all")
    message = load_fails(cli, bad)
    assert f"{bad}: cannot be read as parquet" in message
    assert snapshot(warehouse_path) == loaded


def test_zero_denominators_are_null_and_dropped(tmp_path: Path, cli, warehouse_path: Path
                                                ) -> None:
    """var_mean = 0 gives NULL ratios (never inf) and the detection is not clean."""
    path = tmp_path / "zeros.parquet"
    frame = detections_frame(60, seed=3).with_columns(
        pl.when(pl.int_range(pl.len()) < 5).then(0.0).otherwise(pl.col("var_mean_h"))
        .alias("var_mean_h"),
        flux_significance_b=pl.lit(10.0))
    frame.write_parquet(path)
    cli("warehouse", "--source", str(path), "--labels", "none")
    cli("classify", "--components", "2", "--min-references", "2")
    con = duckdb.connect(str(warehouse_path), read_only=True)
    rows = con.execute("SELECT det_id, var_ratio_h, is_clean FROM model.detection_features "
                       "WHERE det_id <= 6 ORDER BY det_id").fetchall()
    con.close()
    assert rows[:5] == [(i, None, False) for i in range(1, 6)]
    assert rows[5][1] is not None and rows[5][2] is True


def test_failed_classify_keeps_previous_results(tmp_path: Path, cli, warehouse_path: Path
                                                ) -> None:
    path = tmp_path / "ok.parquet"
    frame = detections_frame(60, seed=5).with_columns(flux_significance_b=pl.lit(10.0))
    frame.write_parquet(path)
    cli("warehouse", "--source", str(path), "--labels", "none")
    cli("classify", "--components", "2")
    con = duckdb.connect(str(warehouse_path), read_only=True)
    before = con.execute("SELECT * FROM model.gmm_components ORDER BY component").fetchall()
    con.close()
    # an impossible selection fails after the first models ran: nothing may change
    result = cli("classify", "--min-significance", "1000", expect_ok=False)
    assert "only 0 cleaned detections (0 of 60 pass the selection" in result.output
    con = duckdb.connect(str(warehouse_path), read_only=True)
    after = con.execute("SELECT * FROM model.gmm_components ORDER BY component").fetchall()
    runs = con.execute("SELECT command, status FROM meta.runs ORDER BY started_at").fetchall()
    con.close()
    assert after == before
    assert runs[-2:] == [("classify", "ok"), ("classify", "failed")]


def test_a_failed_insert_reports_its_own_error(tmp_path: Path, cli, loaded: dict,
                                               warehouse_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB's own error (here out of memory), not the aborted transaction's later refusals;
    the warehouse keeps its tables."""
    big = tmp_path / "big.parquet"
    detections_frame(200_000).write_parquet(big)
    monkeypatch.setenv("XPIPE_MEMORY_LIMIT", "4MB")
    output = load_fails(cli, big, "--labels", "none")
    assert "Out of Memory Error" in output
    assert "aborted" not in output
    assert snapshot(warehouse_path) == loaded


def last_run_error(path: Path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT error FROM meta.runs ORDER BY started_at DESC LIMIT 1"
                           ).fetchall()[0][0]
    finally:
        con.close()


def test_fractional_obsid_in_csv(tmp_path: Path, cli, loaded, warehouse_path: Path) -> None:
    """Text is parsed exactly: DuckDB's cast of '1002.5' to INTEGER would round it to 1003."""
    bad = csv_with_cell(tmp_path / "float_obsid.csv", "obsid", row=2, text="1002.5")
    message = load_fails(cli, bad)
    assert f"{bad}, row 3, column 'obsid': expected INTEGER, found '1002.5'" in message
    assert snapshot(warehouse_path) == loaded


@pytest.mark.parametrize("kind", ["gzip", "latin-1", "random"])
def test_unreadable_csv_reports_its_own_error(tmp_path: Path, cli, loaded, warehouse_path: Path,
                                              kind: str) -> None:
    """The reader's error, not the aborted transaction's refusal of the cleanup after it."""
    import gzip

    import numpy as np

    text = detections_frame().write_csv()
    bad = tmp_path / f"{kind}.csv"
    bad.write_bytes({"gzip": gzip.compress(text.encode()),
                     "latin-1": text.replace("2CXO", "2CXÖ").encode("latin-1"),
                     "random": np.random.default_rng(0).bytes(5000)}[kind])
    message = load_fails(cli, bad)
    assert f"{bad}: cannot be read as CSV: " in message
    assert "aborted" not in message
    expected = {"gzip": "it is gzip-compressed", "latin-1": "not utf-8 encoded",
                "random": "not possible to automatically detect the CSV parsing dialect"}[kind]
    assert expected in message
    assert last_run_error(warehouse_path).startswith(f"SchemaError: {bad}: cannot be read as CSV")
    assert snapshot(warehouse_path) == loaded


@pytest.mark.parametrize(("rows", "ragged"), [(20, 4), (21_000, 20_500)],
                         ids=["in the sniffed sample", "after it"])
def test_ragged_csv_row_is_named(tmp_path: Path, cli, loaded, warehouse_path: Path, rows: int,
                                 ragged: int) -> None:
    """A row with fields missing is named, not every column reported missing."""
    lines = detections_frame(rows).write_csv().splitlines()
    lines[ragged + 1] = ",".join(lines[ragged + 1].split(",")[:10])  # data row ragged + 1
    bad = tmp_path / "ragged.csv"
    bad.write_text("\n".join(lines) + "\n")
    message = load_fails(cli, bad)
    assert (f"{bad}, row {ragged + 1} (line {ragged + 2}): 10 fields where the header has 32"
            in message)
    assert last_run_error(warehouse_path).endswith("10 fields where the header has 32")
    assert snapshot(warehouse_path) == loaded


def test_integer_overflow_in_a_parquet_part(tmp_path: Path, cli, loaded, warehouse_path: Path
                                            ) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    detections_frame().write_parquet(parts / "part-00000.parquet")
    frame = detections_frame().with_columns(pl.col("obsid").cast(pl.Int64) + 100)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(2**40)
                               .otherwise(pl.col("obsid")).alias("obsid"))
    frame.write_parquet(parts / "part-00001.parquet")
    message = load_fails(cli, parts, "--labels", "none")
    assert (f"{parts / 'part-00001.parquet'}, row 4, column 'obsid': expected INTEGER, "
            f"found '{2**40}'") in message
    assert snapshot(warehouse_path) == loaded


def test_simulated_catalogue_folder_as_source(tmp_path: Path, cli, warehouse_path: Path) -> None:
    """`--source DIR` of `xpipe simulate --out DIR` loads its detections and SIMBAD objects."""
    sim = tmp_path / "sim"
    cli("simulate", "--detections", "1500", "--seed", "3", "--chunk", "1000", "--out", str(sim))

    def counts() -> tuple[int, int]:
        con = duckdb.connect(str(warehouse_path), read_only=True)
        try:
            return (con.execute("SELECT count(*) FROM raw.detections").fetchall()[0][0],
                    con.execute("SELECT count(*) FROM raw.simbad").fetchall()[0][0])
        finally:
            con.close()

    cli("warehouse", "--source", str(sim))
    detections, simbad = counts()
    assert detections == 1500 and simbad > 0
    cli("warehouse", "--source", str(sim), "--labels", "none")
    assert counts() == (1500, 0)
