"""Physically impossible values (sql/seeds/physical_ranges.csv) are excluded, never fatal."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from factories import detections_frame, simbad_frame

# one bad value per row: (column, value, the reason model.excluded_detections gives)
BAD = [
    ("hard_hm", 1.5, "hard_hm = 1.5 outside [-1, 1]"),
    ("ra", 720.0, "ra = 720.0 outside [0, 360)"),
    ("dec", -100.0, "dec = -100.0 outside [-90, 90]"),
    ("var_prob_b", 2.0, "var_prob_b = 2.0 outside [0, 1]"),
    ("bb_kt", -1.0, "bb_kt = -1.0 outside [0, inf)"),
]
COMPARED = ["model.detection_features", "model.preprocessing_params", "model.scaled_features",
            "model.detection_roles", "model.gmm_components", "model.detection_cluster",
            "model.reference_stats", "results.detection_class", "results.source_class",
            "raw.simbad_match"]


def good_frame() -> pl.DataFrame:
    return detections_frame(60, seed=5).with_columns(flux_significance_b=pl.lit(10.0))


def bad_frame() -> pl.DataFrame:
    """Copies of good rows, each with one impossible value and its own source name."""
    base = good_frame().head(len(BAD))
    rows = [base.slice(i, 1).with_columns(pl.lit(value).alias(column),
                                          name=pl.lit(f"BAD {column}"),
                                          obsid=pl.lit(9000 + i, dtype=pl.Int32))
            for i, (column, value, _) in enumerate(BAD)]
    return pl.concat(rows)


def simbad(frame: pl.DataFrame) -> pl.DataFrame:
    """The factory's counterparts plus one exactly at each bad source's position (ra = 720 is
    ra = 0 on the sky), which only a cross-match that kept the bad rows would find."""
    bad = bad_frame().with_columns(pl.col("ra") % 360)
    extra = pl.DataFrame({"main_id": [f"AT {n}" for n in bad["name"]],
                          "otype": ["QSO"] * bad.height,
                          "ra": bad["ra"], "dec": bad["dec"].clip(-90, 90)})
    return pl.concat([simbad_frame(frame), extra.select(simbad_frame(frame).columns)])


def load_and_classify(cli, tmp_path: Path, frame: pl.DataFrame, name: str) -> str:
    frame.write_parquet(tmp_path / f"{name}.parquet")
    simbad(good_frame()).write_parquet(tmp_path / f"{name}-simbad.parquet")
    cli("warehouse", "--source", str(tmp_path / f"{name}.parquet"),
        "--labels", str(tmp_path / f"{name}-simbad.parquet"))
    return cli("classify", "--components", "2", "--min-references", "2").output


def snapshot(path: Path) -> dict[str, list]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for table in COMPARED:
            columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()
                       if r[0] not in ("run_id", "source_file")]
            select = ", ".join(f'"{c}"' for c in columns)
            out[table] = con.execute(f"SELECT {select} FROM {table} ORDER BY ALL").fetchall()
        return out
    finally:
        con.close()


def test_impossible_rows_are_excluded_and_change_nothing_else(
        tmp_path: Path, cli, warehouse_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = load_and_classify(cli, tmp_path, good_frame(), "good")
    before = snapshot(warehouse_path)
    assert before["raw.simbad_match"] and before["results.detection_class"]
    con = duckdb.connect(str(warehouse_path), read_only=True)
    assert con.execute("SELECT count(*) FROM model.excluded_detections").fetchall() == [(0,)]
    con.close()

    bad_path = tmp_path / "wh2" / "xpipe.duckdb"
    monkeypatch.setenv("XPIPE_WAREHOUSE", str(bad_path))
    output = load_and_classify(cli, tmp_path, pl.concat([good_frame(), bad_frame()]), "bad")
    assert "impossible_values" in output

    con = duckdb.connect(str(bad_path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM raw.detections").fetchall() == [(65,)]
        excluded = con.execute("SELECT name, obsid, reasons FROM model.excluded_detections "
                               "ORDER BY det_id").fetchall()
        assert excluded == [(f"BAD {c}", 9000 + i, reason)
                            for i, (c, _, reason) in enumerate(BAD)]
        for table in ("model.detection_features", "model.scaled_features",
                      "model.detection_roles", "results.detection_class", "raw.simbad_match"):
            hits = con.execute(f"SELECT count(*) FROM {table} WHERE name LIKE 'BAD %'").fetchall()
            assert hits == [(0,)], table
        # the TAP cross-match uploads no position of theirs either
        from xpipe.ingest.crossmatch import stage_sources

        assert stage_sources(con) == 30
        assert con.execute("SELECT count(*) FROM __xmatch_sources "
                           "WHERE name LIKE 'BAD %'").fetchall() == [(0,)]
    finally:
        con.close()
    # every result of the good rows is what it was without the bad ones
    assert snapshot(bad_path) == before
    summary = cli("summary").output
    assert [line.split() for line in summary.splitlines() if "impossible_values" in line] == [
        ["impossible_values", "5"]]


def test_classify_new_flags_instead_of_excluding(tmp_path: Path, cli,
                                                 warehouse_path: Path) -> None:
    from xpipe.api import Classifier

    load_and_classify(cli, tmp_path, good_frame(), "good")
    det = Classifier.load(warehouse_path).classify(bad_frame()).detections
    assert det.height == len(BAD)
    flags = dict(zip(det["name"], det["out_of_range"], strict=True))
    assert flags["BAD hard_hm"] == "hard_hm = 1.5"
    assert flags["BAD var_prob_b"] == "var_prob_b = 2.0"
    assert det.filter(pl.col("name") == "BAD bb_kt")["reason"][0] == (
        "negative bb_kt = -1.0: outside the log transform's domain")


def test_physical_ranges_seed() -> None:
    """One place for the bounds: classify-new reads the seed the SQL is rendered from, and
    every bounded column is one the staging view carries."""
    from xpipe.warehouse.contracts import contract
    from xpipe.warehouse.seeds import physical_ranges

    ranges = physical_ranges()
    staged = {c.name for c in contract("model.stg_detections").columns}
    assert set(ranges) <= staged
    assert ranges["ra"].interval() == "[0, 360)" and ranges["bb_kt"].interval() == "[0, inf)"
    assert {"hard_hm", "hard_hs", "hard_ms", "var_prob_b", "var_prob_h", "var_prob_s", "dec",
            "var_mean_b", "var_mean_h", "var_mean_s"} <= set(ranges)
