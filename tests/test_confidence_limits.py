"""The CSC confidence limits (sql/seeds/confidence_limits.csv): optional inputs, checked in
model.detection_limits, never a reason to exclude a detection or to change a classification."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from factories import limit_columns, with_limits
from test_impossible_values import good_frame, load_and_classify, snapshot

from xpipe.warehouse.contracts import contract
from xpipe.warehouse.migrations import LIMIT_COLUMNS_V5
from xpipe.warehouse.seeds import confidence_limits, feature_names, physical_ranges

# one bad pair of limits per row: (column: value, ..., the reason model.detection_limits gives)
BAD = [
    ({"hard_hm": 0.5, "hard_hm_lolim": 0.6, "hard_hm_hilim": 0.7},
     "hard_hm = 0.5 outside its limits [0.6, 0.7]"),
    ({"hard_hs_lolim": None}, "hard_hs has one limit only: [NULL, {hi}]"),
    ({"powlaw_gamma_lolim": 3.0, "powlaw_gamma_hilim": 1.0, "powlaw_gamma": 2.0},
     "powlaw_gamma = 2.0 outside its limits [3.0, 1.0]"),
    ({"hard_ms": -0.99, "hard_ms_lolim": -1.2, "hard_ms_hilim": -0.9},
     "hard_ms limits [-1.2, -0.9] outside [-1, 1]"),
    ({"bb_kt": 0.2, "bb_kt_lolim": -0.1, "bb_kt_hilim": 0.4},
     "bb_kt limits [-0.1, 0.4] outside [0, inf)"),
]


def bad_limits(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with the limits of row i spoilt as BAD[i] says (its values may move too, so the
    comparison runs are given the same values)."""
    rows = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        if i < len(BAD):
            row = {**row, **BAD[i][0]}
        rows.append(row)
    return pl.DataFrame(rows, schema=frame.schema)


def test_the_seed_names_the_contract_columns_once() -> None:
    """The limit columns of raw.detections are the seed's (the schema expands a template over
    it), each a nullable DOUBLE of a feature; layout 5 added exactly these."""
    limits = confidence_limits()
    assert set(limits) <= set(feature_names())
    assert set(limits) == {"hard_hm", "hard_hs", "hard_ms", "powlaw_gamma", "bb_kt"}
    columns = {c.name: c for c in contract("raw.detections").columns}
    for lim in limits.values():
        assert 0 < lim.level < 1
        for name in (lim.lolim, lim.hilim):
            assert columns[name].type == "DOUBLE" and columns[name].nullable
            assert not columns[name].required
    assert tuple(limit_columns()) == LIMIT_COLUMNS_V5
    assert all(f in physical_ranges() for f in ("hard_hm", "hard_hs", "hard_ms", "bb_kt"))


def test_limits_load_and_bad_ones_are_reported_not_excluded(
        tmp_path: Path, cli, warehouse_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same detections classify identically without limit columns, with good limits and
    with bad ones; the good limits reach model.detection_limits as published, the bad ones are
    NULL there with their reason, and no detection is excluded for a limit."""
    base = bad_limits(with_limits(good_frame()))  # the values of the bad rows in every run
    load_and_classify(cli, tmp_path, base.drop(limit_columns()), "none")
    without = snapshot(warehouse_path)

    monkeypatch.setenv("XPIPE_WAREHOUSE", str(tmp_path / "good" / "xpipe.duckdb"))
    good = with_limits(base.drop(limit_columns()))
    load_and_classify(cli, tmp_path, good, "good")
    assert snapshot(tmp_path / "good" / "xpipe.duckdb") == without
    with duckdb.connect(str(tmp_path / "good" / "xpipe.duckdb"), read_only=True) as con:
        kept = con.sql(f"SELECT {', '.join(limit_columns())} FROM model.detection_limits "
                       "ORDER BY det_id").pl()
        assert con.execute("SELECT count(*) FROM model.detection_limits WHERE limit_problems "
                           "IS NOT NULL").fetchall() == [(0,)]
    assert kept.equals(good.select(limit_columns()))

    bad_path = tmp_path / "bad" / "xpipe.duckdb"
    monkeypatch.setenv("XPIPE_WAREHOUSE", str(bad_path))
    output = load_and_classify(cli, tmp_path, base, "bad")
    assert snapshot(bad_path) == without
    with duckdb.connect(str(bad_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM model.excluded_detections").fetchall() == [(0,)]
        problems = con.execute("SELECT limit_problems FROM model.detection_limits "
                               "ORDER BY det_id").fetchall()
        row1 = con.execute("SELECT hard_hs_lolim, hard_hs_hilim, hard_hm_lolim "
                           "FROM model.detection_limits ORDER BY det_id LIMIT 1 OFFSET 1"
                           ).fetchall()
    hi = base["hard_hs_hilim"][1]
    assert [p for (p,) in problems[:len(BAD)]] == [r.format(hi=hi) for _, r in BAD]
    assert all(p is None for (p,) in problems[len(BAD):])
    assert row1 == [(None, None, base["hard_hm_lolim"][1])]  # only the bad feature is dropped
    assert "limit_problems" in output
    summary = cli("summary").output
    assert [line.split() for line in summary.splitlines() if "limit_problems" in line] == [
        ["limit_problems", str(len(BAD))]]


def test_a_cached_simulation_from_older_params_is_made_again(tmp_path: Path, cli) -> None:
    """`--source sim` reuses its catalogue only when the simulator's params file is the one it
    was made from: one made before the limits existed is made again, so it has them."""
    import json

    from xpipe.simulation.catalogue import current_params_sha256

    sim = tmp_path / "sim"
    args = ("warehouse", "--source", "sim", "--sim-dir", str(sim), "--detections", "3000",
            "--seed", "7", "--labels", "none")
    cli(*args)
    manifest = json.loads((sim / "manifest.json").read_text())
    assert "using simulated catalogue" in cli(*args).output  # same params: reused
    manifest["params_sha256"] = "0" * 64  # as an older xpipe's simulator left it
    (sim / "manifest.json").write_text(json.dumps(manifest))
    (sim / "detections" / "stale.parquet").write_bytes(b"not parquet")
    output = cli(*args).output
    assert "making it again" in output and "using simulated catalogue" not in output
    assert not (sim / "detections" / "stale.parquet").exists()
    made = json.loads((sim / "manifest.json").read_text())
    assert made["params_sha256"] == current_params_sha256()
    det = pl.read_parquet(sorted((sim / "detections").glob("*.parquet")))
    assert det["hard_hm_lolim"].null_count() < det.height
