"""`xpipe uncertainty`, `classify-new --draws` and the API's intervals (issue 14 §2): zero-width
limits reproduce the stored classification bit for bit; NULL limits give NULL and a flag;
wider limits lower the class stability; the numbers do not depend on threads, chunks or the
entry point; an interrupted run leaves nothing; a new classification makes them stale."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from science_fixtures import classified_copy

from xpipe.api import Classifier
from xpipe.core.config import Settings
from xpipe.core.errors import InputError
from xpipe.predict import uncertainty
from xpipe.predict.draws import (
    DrawParams,
    DrawScaler,
    chunk_detections,
    drawn_features,
    score_draws,
)
from xpipe.science.common import is_current, uncertainty_is_current
from xpipe.warehouse.connection import connect
from xpipe.warehouse.seeds import (
    class_names,
    confidence_limits,
    feature_names,
    limit_columns,
    physical_ranges,
)
from xpipe.warehouse.sql_models import load_macros, run_models

DRAWS = 6
TABLES = uncertainty.TABLES
# limits a plausible width from the flux significance (fainter: wider)
WIDTH = {"hard_hm": "0.6", "hard_hs": "0.6", "hard_ms": "0.6", "powlaw_gamma": "2.0",
         "bb_kt": "0.5"}


def set_limits(warehouse: Path, width: str | None, where: str = "TRUE") -> None:
    """lolim / hilim = value ∓ width (a SQL expression; None: NULL limits) where `where`,
    inside the physical range, then model.detection_limits rebuilt as classify builds it."""
    ranges = physical_ranges()
    with duckdb.connect(str(warehouse)) as con:
        for e in confidence_limits().values():
            w = None if width is None else width.format(scale=WIDTH[e.feature])
            bounds = ranges.get(e.feature)
            lo = "-1e300" if bounds is None or bounds.min is None else repr(bounds.min)
            hi = "1e300" if bounds is None or bounds.max is None else repr(bounds.max)
            lower = "NULL" if w is None else f"greatest({e.feature} - ({w}), {lo})"
            upper = "NULL" if w is None else f"least({e.feature} + ({w}), {hi})"
            con.execute(f"UPDATE raw.detections SET {e.lolim} = {lower}, {e.hilim} = {upper} "
                        f"WHERE {where}")
        rebuild_limits(con)


def rebuild_limits(con: duckdb.DuckDBPyConnection) -> None:
    load_macros(con)
    run_models(con, names=["model.stg_detections", "model.detection_limits"])


SIGNIFICANCE_WIDTH = "{scale} / greatest(flux_significance_b, 1)"


def tables(warehouse: Path) -> dict[str, pl.DataFrame]:
    """The three results tables without their run columns, in a fixed order."""
    keys = {TABLES[0]: ["det_id"], TABLES[1]: ["det_id", "class"], TABLES[2]: ["name"]}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.sql(f"SELECT * EXCLUDE (run_id, classify_run_id) FROM {t}").pl()
                .sort(keys[t]) for t in TABLES}


def assert_same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for table in a:
        assert_frame_equal(a[table], b[table], check_exact=True)


def run(warehouse: Path, params: DrawParams, chunk_rows: int = 500_000) -> None:
    settings = Settings(warehouse=warehouse, chunk_rows=chunk_rows)
    with connect(settings) as con:
        uncertainty.run_uncertainty(con, settings, params)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The science warehouse with limits from the flux significance (every 9th detection
    without any), drawn once."""
    warehouse = classified_copy(tmp_path_factory, "uncertainty")
    set_limits(warehouse, SIGNIFICANCE_WIDTH)
    set_limits(warehouse, None, where="det_id % 9 = 0")
    run(warehouse, DrawParams(DRAWS, seed=42))
    return warehouse


def test_zero_width_limits_reproduce_the_stored_classification_bit_for_bit(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    warehouse = classified_copy(tmp_path_factory, "zero-width")
    set_limits(warehouse, "0")
    run(warehouse, DrawParams(DRAWS, seed=1))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        intervals = con.sql(f"SELECT * FROM {TABLES[1]}").pl()
        detections = con.sql(f"SELECT * FROM {TABLES[0]}").pl()
        sources = con.sql(f"SELECT * FROM {TABLES[2]}").pl()
        classified = con.sql("SELECT count(*) AS n FROM results.detection_class "
                             "WHERE pred_class IS NOT NULL").pl()["n"][0]
        stored = con.sql("SELECT d.det_id, class, value FROM (UNPIVOT results.detection_class "
                         f"ON {', '.join(f'{chr(34)}{c}{chr(34)}' for c in class_names())} "
                         "INTO NAME class VALUE value) AS d WHERE pred_class IS NOT NULL").pl()
    assert detections.height == classified > 1000
    joined = intervals.join(stored, on=["det_id", "class"])
    assert joined.height == intervals.height == classified * len(class_names())
    for column in ("probability", "mean_probability", "lo68", "hi68", "lo95", "hi95"):
        assert (joined[column] == joined["value"]).all(), column  # exact, not approximate
    assert (detections["pred_agreement"] == 1).all() and detections["flag"].null_count() == \
        detections.height
    for column in ("class_stability", "agg_class_stability", "hard_stability",
                   "soft_stability"):
        assert (sources[column] == 1).all(), column
    assert sources["other_outcome"].null_count() == sources.height


def test_every_zero_width_draw_is_the_stored_probability(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The draws themselves, before any summary: scaled by the SQL model, clustered and scored
    by the scoring core, each equals results.detection_class to the last bit."""
    warehouse = classified_copy(tmp_path_factory, "zero-width-draws")
    classes = list(class_names())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        model = uncertainty.stored_model(con)
        frame = con.sql(
            f"SELECT d.det_id, r.name, r.obsid, r.obi, r.region_id, "
            f"{', '.join(f'f.{f}' for f in feature_names())}, "
            f"{', '.join(f'd.{chr(34)}{c}{chr(34)}' for c in classes)}, d.pred_class "
            "FROM results.detection_class AS d JOIN model.detection_features AS f "
            "USING (det_id) JOIN raw.detections AS r USING (det_id) "
            "WHERE d.pred_class IS NOT NULL ORDER BY r.name, r.obsid, d.det_id").pl()
    frame = frame.with_columns(**{c: pl.col(e.feature) for e in confidence_limits().values()
                                  for c in (e.lolim, e.hilim)})
    scaler = DrawScaler(model)
    try:
        scored = score_draws(frame, model, scaler, DrawParams(4, seed=3))
    finally:
        scaler.close()
    nominal = frame.select(classes).to_numpy()
    assert np.array_equal(scored.proba, np.repeat(nominal[:, None, :], 4, axis=1))


def test_null_limits_give_null_and_a_flag_never_a_stability_of_one(drawn: Path) -> None:
    with duckdb.connect(str(drawn), read_only=True) as con:
        det = con.sql(f"SELECT * FROM {TABLES[0]}").pl()
        intervals = con.sql(f"SELECT * FROM {TABLES[1]} WHERE det_id % 9 = 0").pl()
        src = con.sql(f"""
            SELECT s.*, count(*) FILTER (WHERE d.det_id % 9 = 0) AS without
            FROM {TABLES[2]} AS s JOIN {TABLES[0]} AS d USING (name) GROUP BY ALL""").pl()
    without = det.filter(pl.col("det_id") % 9 == 0)
    assert without.height > 10
    assert (without["flag"] == uncertainty.NO_ERRORS).all()
    assert without["pred_agreement"].null_count() == without.height
    assert without["drawn_features"].null_count() == without.height
    assert intervals["mean_probability"].null_count() == intervals.height
    assert intervals["probability"].null_count() == 0  # the stored probability stays
    with_errors = det.filter(pl.col("det_id") % 9 != 0)
    assert with_errors["flag"].null_count() == with_errors.height
    assert with_errors["drawn_features"].unique().to_list() == [
        ", ".join(e.feature for e in confidence_limits().values())]
    none = src.filter(pl.col("without") == pl.col("detection_count"))
    partial = src.filter((pl.col("without") > 0) & (pl.col("without") < pl.col("detection_count")))
    full = src.filter(pl.col("without") == 0)
    assert none.height > 5 and partial.height > 0 and full.height > 100
    assert (none["flag"] == uncertainty.NO_ERRORS).all()
    assert none["class_stability"].null_count() == none.height
    assert (partial["flag"] == "partial errors").all()
    assert partial["class_stability"].null_count() == 0
    assert full["flag"].null_count() == full.height
    assert (full["class_stability"] < 1).any()  # limits this wide move some sources


def test_same_seed_same_numbers_on_any_threads_and_chunks(
        drawn: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    reference = tables(drawn)
    other = tmp_path_factory.mktemp("chunks") / "xpipe.duckdb"
    other.write_bytes(drawn.read_bytes())
    run(other, DrawParams(DRAWS, seed=42, n_jobs=1), chunk_rows=1_000)  # ~40 detections a chunk
    assert_same(tables(other), reference)
    run(other, DrawParams(DRAWS, seed=42, n_jobs=2), chunk_rows=50_000)
    assert_same(tables(other), reference)
    run(other, DrawParams(DRAWS, seed=43))
    assert tables(other)[TABLES[1]]["mean_probability"].to_list() != \
        reference[TABLES[1]]["mean_probability"].to_list()


def test_classify_new_and_the_api_give_the_stored_numbers(drawn: Path, cli,
                                                          tmp_path: Path) -> None:
    with duckdb.connect(str(drawn), read_only=True) as con:
        names = con.sql(f"SELECT name FROM {TABLES[2]} WHERE detection_count > 1 "
                        "AND flag IS NULL ORDER BY name LIMIT 40").pl()["name"]
        raw = con.sql("SELECT * FROM raw.detections WHERE det_id IN (SELECT det_id FROM "
                      f"{TABLES[0]} WHERE name IN (SELECT unnest($n))) ORDER BY det_id",
                      params={"n": names.to_list()}).pl()  # the classified (not references)
        stored = con.sql(f"SELECT i.*, r.obsid, r.obi, r.region_id FROM {TABLES[1]} AS i "
                         "JOIN raw.detections AS r USING (det_id)").pl()
        stored_sources = con.sql(f"SELECT * FROM {TABLES[2]}").pl()
    classes = list(class_names())
    clf = Classifier.load(drawn)
    spread = clf.predict_intervals(raw, draws=DRAWS, seed=42)
    key = raw.select("name", "obsid", "obi", "region_id").with_row_index("row")
    for stat, column in (("mean", "mean_probability"), ("lo68", "lo68"), ("hi95", "hi95")):
        wide = stored.pivot(on="class", index=["name", "obsid", "obi", "region_id"],
                            values=column)
        aligned = key.join(wide, on=["name", "obsid", "obi", "region_id"], how="left",
                           maintain_order="left")
        expected = aligned.select(classes).to_numpy().astype(np.float64)
        assert np.array_equal(getattr(spread, stat), expected, equal_nan=True), stat
    assert np.array_equal(clf.predict_proba(raw, draws=DRAWS, seed=42), spread.mean,
                          equal_nan=True)
    # classify-new --draws: the same numbers in --out, the same stability per source
    source = tmp_path / "new.parquet"
    raw.drop("det_id", "source_file", "source_row").write_parquet(source)
    out = tmp_path / "out.parquet"
    result = cli("--warehouse", str(drawn), "classify-new", str(source), "--draws", str(DRAWS),
                 "--out", str(out))
    assert "stability" in result.output
    written = pl.read_parquet(out)
    assert np.array_equal(written.select(f"{c}_mean" for c in classes).to_numpy()
                          .astype(np.float64), spread.mean, equal_nan=True)
    prediction = clf.classify(raw, draws=DRAWS, seed=42)
    assert prediction.uncertainty is not None
    new_sources = prediction.uncertainty.sources.sort("name")
    old = stored_sources.filter(pl.col("name").is_in(names.to_list())).sort("name")
    for column in ("class_stability", "agg_class_stability", "other_outcome"):
        assert new_sources[column].to_list() == old[column].to_list(), column


def test_wider_limits_lower_the_stability_on_average(drawn: Path) -> None:
    """Constructed single-detection sources deep inside one class's region (stored probability
    ≥ 0.95), drawn with common random numbers at growing widths: the mean class stability
    falls at every step (a trend over many sources, not a per-row inequality)."""
    classes = list(class_names())
    with duckdb.connect(str(drawn), read_only=True) as con:
        dominant = con.sql(f"""
            SELECT r.*, d.pred_class FROM raw.detections AS r JOIN results.detection_class AS d
            USING (det_id) WHERE greatest({', '.join(f'd."{c}"' for c in classes)}) >= 0.95
            ORDER BY r.det_id""").pl()
    top = dominant["pred_class"].value_counts().sort("count", descending=True)["pred_class"][0]
    region = dominant.filter(pl.col("pred_class") == top).head(150).drop("pred_class")
    assert region.height >= 50
    region = region.with_columns(
        name=pl.format("TEST J{}", pl.int_range(pl.len())), region_id=pl.int_range(pl.len()))
    clf = Classifier.load(drawn)
    means = []
    for factor in (0.25, 0.5, 1.0, 2.0):
        widened = region.with_columns(**{
            c: pl.col(e.feature) + sign * factor * float(WIDTH[e.feature]) / 10
            for e in confidence_limits().values() for c, sign in ((e.lolim, -1), (e.hilim, 1))})
        drawn_sources = clf.classify(widened.drop("det_id", "source_file", "source_row"),
                                     draws=40, seed=9).uncertainty
        assert drawn_sources is not None
        means.append(float(drawn_sources.sources["class_stability"].mean()))
    assert all(a > b for a, b in itertools.pairwise(means)), means
    assert means[0] - means[-1] > 0.1, means


def test_an_interrupted_run_leaves_the_previous_results(drawn: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    warehouse = tmp_path / "xpipe.duckdb"
    warehouse.write_bytes(drawn.read_bytes())
    before = tables(warehouse)
    calls = []
    real = uncertainty.draw_chunk

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(uncertainty, "draw_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(warehouse, DrawParams(DRAWS, seed=5), chunk_rows=1_000)
    assert_same(tables(warehouse), before)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        status = con.sql("SELECT status FROM meta.runs WHERE command = 'uncertainty' "
                         "ORDER BY started_at DESC LIMIT 1").pl()["status"][0]
        leftovers = con.sql("SELECT count(*) AS n FROM duckdb_tables() "
                            "WHERE table_name LIKE '%uncertainty_detections%'").pl()["n"][0]
    assert status == "failed" and leftovers == 0


def test_unusable_limits_hold_that_feature_and_say_so(drawn: Path, tmp_path: Path) -> None:
    """A lower limit above the value: model.detection_limits gives the reason, the feature is
    held at its value, the detection and its source are flagged 'partial errors'."""
    warehouse = tmp_path / "xpipe.duckdb"
    warehouse.write_bytes(drawn.read_bytes())
    with duckdb.connect(str(warehouse)) as con:
        det_id = con.sql(f"SELECT det_id FROM {TABLES[0]} WHERE flag IS NULL ORDER BY det_id "
                         "LIMIT 1").fetchall()[0][0]
        con.execute("UPDATE raw.detections SET hard_ms_lolim = hard_ms + 0.01 "
                    "WHERE det_id = ?", [det_id])
        rebuild_limits(con)
    run(warehouse, DrawParams(DRAWS))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        problem = con.sql("SELECT limit_problems FROM model.detection_limits "
                          "WHERE det_id = ?", params=[det_id]).fetchall()[0][0]
        row = con.sql(f"SELECT d.flag, d.drawn_features, s.flag FROM {TABLES[0]} AS d "
                      f"JOIN {TABLES[2]} AS s USING (name) WHERE det_id = ?",
                      params=[det_id]).fetchall()[0]
    assert "hard_ms" in problem and "outside its limits" in problem
    assert row[0] == "partial errors" and row[2] == "partial errors"
    assert "hard_ms" not in row[1] and "hard_hm" in row[1]


def test_draws_refuse_limits_that_do_not_bracket_the_value() -> None:
    """Called directly (the warehouse and files pass through model.detection_limits first)."""
    frame = pl.DataFrame({"det_id": [1], "name": ["X"], "obsid": [1], "obi": [0],
                          "region_id": [1], **{f: [0.5] for f in feature_names()},
                          **{c: [0.4 if c.endswith("lolim") else 0.6]
                             for c in limit_columns()}})
    assert drawn_features(frame, DrawParams(3))[1].all()
    frame = frame.with_columns(hard_ms_lolim=pl.lit(0.6))
    with pytest.raises(InputError, match=r"name=X.*hard_ms_lolim = 0.6.*<= hard_ms <="):
        drawn_features(frame, DrawParams(3))


def test_cli_records_the_run_and_a_new_classification_makes_it_stale(
        tmp_path_factory: pytest.TempPathFactory, cli) -> None:
    warehouse = classified_copy(tmp_path_factory, "stale")
    set_limits(warehouse, SIGNIFICANCE_WIDTH)
    result = cli("--warehouse", str(warehouse), "uncertainty", "--draws", "4", "--seed", "7")
    assert "share_stable_90" in result.output and "source_class_stability" in result.output
    params = {"draws": 4, "seed": 7}
    with connect(Settings(warehouse=warehouse), read_only=True) as con:
        assert all(is_current(con, t) for t in TABLES)
        assert uncertainty_is_current(con, params)
        assert not uncertainty_is_current(con, {"draws": 5, "seed": 7})
        runs = con.sql("SELECT status, params, row_counts FROM meta.runs "
                       "WHERE command = 'uncertainty'").pl()
    assert runs["status"].to_list() == ["ok"] and '"draws": 4' in runs["params"][0]
    skipped = cli("--warehouse", str(warehouse), "uncertainty", "--draws", "4", "--seed", "7",
                  "--skip-if-current")
    assert "skipping" in skipped.output
    cli("--warehouse", str(warehouse), "classify", "--seed", "43")
    with connect(Settings(warehouse=warehouse), read_only=True) as con:
        assert not any(is_current(con, t) for t in TABLES)
        assert not uncertainty_is_current(con, params)


def test_more_draws_than_memory_allows_are_refused_before_anything_runs(
        drawn: Path, cli) -> None:
    """A huge --draws would hold one detection's draws in memory at once (and overflow the
    stored INTEGER n_draws): a clear error naming the bound, the stored results untouched."""
    assert chunk_detections(DrawParams(125_000), 500_000) == 1
    with pytest.raises(InputError, match=r"--draws 125,001 .* 125,000 draws .*XPIPE_CHUNK_ROWS"):
        chunk_detections(DrawParams(125_001), 500_000)
    with connect(Settings(warehouse=drawn), read_only=True) as con:
        before = con.sql("SELECT * FROM results.source_class_stability ORDER BY name").pl()
    result = cli("--warehouse", str(drawn), "uncertainty", "--draws", str(10**11),
                 expect_ok=False)
    assert result.exit_code != 0 and "XPIPE_CHUNK_ROWS" in result.output
    with connect(Settings(warehouse=drawn), read_only=True) as con:
        after = con.sql("SELECT * FROM results.source_class_stability ORDER BY name").pl()
    assert_frame_equal(before, after)


def test_uncertainty_on_a_warehouse_with_nothing_loaded_says_to_load_first(
        tmp_path: Path, cli) -> None:
    """An empty warehouse needs a catalogue before a classification: the message says which."""
    result = cli("--warehouse", str(tmp_path / "empty.duckdb"), "uncertainty", expect_ok=False)
    assert result.exit_code != 0
    assert "xpipe warehouse" in result.output and "xpipe classify" not in result.output
