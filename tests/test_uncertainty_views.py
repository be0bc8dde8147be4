"""Where users see the uncertainty results (issue 14 §3): `xpipe explain` (text and figure),
`xpipe export` (extra files beside the published layout, every format), the calibration of the
class stability against the simulator's truth; absent and stale results said so, never shown."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from matplotlib.collections import LineCollection
from science_fixtures import _BUILT, classified_copy
from test_file_formats import assert_reads_back

from xpipe.core.errors import InputError
from xpipe.predict.export import published_queries, uncertainty_queries
from xpipe.predict.uncertainty import uncertainty_state
from xpipe.science.class_stability import calibration, read_truth, stable_share
from xpipe.science.explain import explain_source
from xpipe.warehouse.file_formats import FILE_SUFFIXES

DRAWS = 40


@pytest.fixture(scope="module")
def undrawn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classified_copy(tmp_path_factory, "views-undrawn")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The science warehouse (the simulator's limits) after `xpipe uncertainty`."""
    from click.testing import CliRunner

    from xpipe.cli.main import main

    warehouse = classified_copy(tmp_path_factory, "views-drawn")
    result = CliRunner().invoke(main, ["--warehouse", str(warehouse), "uncertainty", "--draws",
                                       str(DRAWS), "--seed", "5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return warehouse


def stale_copy(drawn: Path, tmp_path: Path) -> Path:
    """The drawn warehouse as if `xpipe classify` had run since (the tables name another)."""
    path = tmp_path / "stale.duckdb"
    shutil.copyfile(drawn, path)
    with duckdb.connect(str(path)) as con:
        for table in ("detection_class_uncertainty", "detection_class_intervals",
                      "source_class_stability"):
            con.execute(f"UPDATE results.{table} SET classify_run_id = 'an-older-run'")
    return path


def multi_detection_source(con: duckdb.DuckDBPyConnection) -> str:
    return con.sql("SELECT name FROM results.source_class_stability "
                   "WHERE detections_with_errors >= 3 AND class_stability < 1 "
                   "ORDER BY detection_count DESC, name LIMIT 1").fetchall()[0][0]


def test_explain_shows_the_intervals_and_the_stability(drawn: Path, cli, tmp_path) -> None:
    con = duckdb.connect(str(drawn), read_only=True)
    name = multi_detection_source(con)
    stability = con.sql("SELECT * FROM results.source_class_stability WHERE name = $n",
                        params={"n": name}).pl().row(0, named=True)
    rows = con.sql("""
        SELECT u.obsid, i.probability, i.lo68, i.hi68, i.lo95, i.hi95, u.flag
        FROM results.detection_class_intervals AS i
        JOIN results.detection_class_uncertainty AS u USING (det_id)
        WHERE i.name = $n AND i.class = u.pred_class""", params={"n": name}).fetchall()
    con.close()
    out = tmp_path / "explain.png"
    text = cli("--warehouse", str(drawn), "explain", name, "--out", str(out)).output
    assert f"measurement errors ({DRAWS} draws, seed 5;" in text
    for obsid, probability, lo68, hi68, lo95, hi95, flag in rows:
        if flag == "no published errors":
            assert re.search(rf"{obsid}\s.*{probability:.3f}\s+no published errors", text)
        else:
            assert re.search(rf"{obsid}\s.*{probability:.3f} +\[{lo68:.3f}, {hi68:.3f}\] +"
                             rf"\[{lo95:.3f}, {hi95:.3f}\]", text), (obsid, text)
    assert (f"class stability: {stability['outcome']} holds in "
            f"{stability['class_stability']:.1%} of the draws") in text
    assert out.read_bytes().startswith(b"\x89PNG")


def test_explain_figure_draws_an_interval_per_detection_and_class(drawn: Path) -> None:
    con = duckdb.connect(str(drawn), read_only=True)
    name = multi_detection_source(con)
    explanation = explain_source(con, name)
    expected = int(con.sql("""
        SELECT count(*) FROM results.detection_class_intervals AS i
        JOIN results.detection_class AS d USING (det_id)
        WHERE i.name = $n AND i.lo68 IS NOT NULL""", params={"n": name}).fetchall()[0][0])
    con.close()
    fig = explanation.figure()
    lines = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    labels = {c.get_label() for c in lines if c.get_label().endswith("draws")}
    assert labels == {"68 % of the draws", "95 % of the draws"}  # one legend entry each
    n68 = sum(len(c.get_segments()) for c in lines if np.allclose(c.get_linewidth(), 2.4))
    assert n68 == expected > 0  # one 68 % interval per detection and class shown
    assert "class stability:" in fig.axes[0].get_title()


def test_explain_says_absent_stale_and_no_published_errors(undrawn: Path, drawn: Path, cli,
                                                            tmp_path) -> None:
    con = duckdb.connect(str(undrawn), read_only=True)
    name = multi_detection_source_or_any(con)
    con.close()
    text = cli("--warehouse", str(undrawn), "explain", name).output
    assert "measurement errors: no uncertainty results" in text
    assert "run `xpipe uncertainty`" in text and "class stability:" not in text

    stale = stale_copy(drawn, tmp_path)
    text = cli("--warehouse", str(stale), "explain", name).output
    assert "measurement errors: stale" in text and "an-older-run" in text
    assert "class stability:" not in text

    # a source none of whose detections has published errors: NULL, said so, never 1
    with duckdb.connect(str(stale)) as con:
        con.execute("UPDATE results.source_class_stability SET classify_run_id = "
                    "(SELECT any_value(run_id) FROM model.gmm_components)")
        con.execute("UPDATE results.detection_class_intervals SET classify_run_id = "
                    "(SELECT any_value(run_id) FROM model.gmm_components)")
        con.execute("UPDATE results.detection_class_uncertainty SET classify_run_id = "
                    "(SELECT any_value(run_id) FROM model.gmm_components)")
        con.execute("UPDATE results.source_class_stability SET class_stability = NULL, "
                    "agg_class_stability = NULL, flag = 'no published errors' WHERE name = ?",
                    [name])
    text = cli("--warehouse", str(stale), "explain", name).output
    assert "class stability: none — no detection of the source has published errors" in text


def multi_detection_source_or_any(con: duckdb.DuckDBPyConnection) -> str:
    return con.sql("SELECT name FROM results.source_class ORDER BY detection_count DESC, name "
                   "LIMIT 1").fetchall()[0][0]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "votable", "fits"])
def test_export_writes_the_uncertainty_files_beside_the_published_ones(
        drawn: Path, cli, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "export"
    output = cli("--warehouse", str(drawn), "export", "--out", str(out), "--format",
                 fmt).output
    suffix = FILE_SUFFIXES[fmt]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}{suffix}" for n in [*published_queries(), *uncertainty_queries()])
    assert "not written" not in output
    with duckdb.connect(str(drawn), read_only=True) as con:
        for name, query in uncertainty_queries().items():
            path = out / f"{name}{suffix}"
            if fmt == "csv":
                expected = con.sql(query).pl()
                assert pl.read_csv(path, schema=expected.schema).equals(expected)
            else:
                assert_reads_back(con, query, path, fmt)
        assert con.sql("SELECT count(*) FROM results.source_class_stability").fetchall()[0][0] \
            == con.sql("SELECT count(*) FROM results.source_class").fetchall()[0][0]


def test_export_without_current_results_writes_only_the_published_files(
        undrawn: Path, drawn: Path, cli, tmp_path: Path) -> None:
    for warehouse, said in ((undrawn, "run `xpipe uncertainty`"),
                            (stale_copy(drawn, tmp_path), "stale")):
        out = tmp_path / f"export-{warehouse.parent.name}"
        output = cli("--warehouse", str(warehouse), "export", "--out", str(out)).output
        assert "uncertainty files not written" in output and said in output
        assert sorted(p.stem for p in out.iterdir()) == sorted(published_queries())


def test_a_stale_export_removes_the_earlier_uncertainty_files_it_would_sit_beside(
        drawn: Path, cli, tmp_path: Path) -> None:
    """Exporting again into the same folder after `xpipe classify` must not leave the earlier
    run's stability files next to the new published ones (CSV carries no provenance)."""
    out = tmp_path / "again"
    cli("--warehouse", str(drawn), "export", "--out", str(out))
    assert (out / "source_class_stability.csv").is_file()
    (out / "notes.txt").write_text("mine")
    output = cli("--warehouse", str(stale_copy(drawn, tmp_path)), "export", "--out",
                 str(out)).output
    assert "stale" in output and f"removed {out / 'source_class_stability.csv'}" in output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.csv" for n in published_queries()] + ["notes.txt"])


def test_stable_share_counts_null_apart(drawn: Path) -> None:
    with duckdb.connect(str(drawn), read_only=True) as con:
        shares = stable_share(con)
        stability = con.sql("SELECT outcome, class_stability "
                            "FROM results.source_class_stability").pl()
    for row in shares.iter_rows(named=True):
        part = stability.filter(pl.col("outcome") == row["outcome"])["class_stability"]
        assert row["sources"] == part.len()
        assert row["no_published_errors"] == part.null_count()
        known = part.drop_nulls()
        if known.len():
            assert row["share_stable"] == pytest.approx(float((known >= 0.9).mean()))


def test_calibration_against_the_simulated_truth(drawn: Path, tmp_path: Path) -> None:
    truth_dir = _BUILT["warehouse"].parent / "sim" / "truth"
    truth = read_truth(truth_dir)
    with duckdb.connect(str(drawn), read_only=True) as con:
        table = calibration(con, truth)
        n_unique = con.sql("SELECT count(*) FROM results.source_class_stability "
                           "JOIN results.source_class USING (name) "
                           "WHERE is_unique AND class_stability IS NOT NULL").fetchall()[0][0]
        # the same numbers with the truth of the aggregated class shuffled among sources
        shuffled = truth.with_columns(true_agg_class=truth["true_agg_class"].shuffle(seed=1))
        scrambled = calibration(con, shuffled)
    overall = table.filter((pl.col("level") == "aggregated") & (pl.col("agg_class") == "all"))
    assert overall["sources"].sum() == n_unique
    assert (table["accuracy"] - table["correct"] / table["sources"]).abs().max() < 1e-12
    for level in ("aggregated", "class"):
        part = table.filter((pl.col("level") == level) & (pl.col("agg_class") != "all"))
        assert part["sources"].sum() == n_unique
    scrambled_all = scrambled.filter((pl.col("level") == "aggregated")
                                     & (pl.col("agg_class") == "all"))
    assert scrambled_all["correct"].sum() < overall["correct"].sum()

    with (pytest.raises(InputError, match="not in the truth table"),
          duckdb.connect(str(drawn), read_only=True) as con):
        calibration(con, truth.head(10))
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"name": ["x"]}).write_parquet(bad)
    with pytest.raises(InputError, match=r"no column\(s\) \['agg_class', 'true_class'\]"):
        read_truth(bad)


def test_state_of_the_results(undrawn: Path, drawn: Path, tmp_path: Path) -> None:
    with duckdb.connect(str(undrawn), read_only=True) as con:
        assert uncertainty_state(con).status == "absent"
    with duckdb.connect(str(drawn), read_only=True) as con:
        state = uncertainty_state(con)
        assert (state.status, state.n_draws, state.seed) == ("current", DRAWS, 5)
    with duckdb.connect(str(stale_copy(drawn, tmp_path)), read_only=True) as con:
        state = uncertainty_state(con)
        assert state.status == "stale" and state.computed_for == "an-older-run"
