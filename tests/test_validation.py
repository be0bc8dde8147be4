"""`xpipe validate` and `xpipe stability`: the split, the SQL metrics against scikit-learn, and
both commands on a small simulated catalogue."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest
from science_fixtures import classified_copy
from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

from xpipe.predict.batch import create_detection_class
from xpipe.science.stability import changed_fractions
from xpipe.science.validation import SQL_MODELS, stratified_split
from xpipe.warehouse.connection import connect_memory
from xpipe.warehouse.seeds import aggregated_classes, class_names
from xpipe.warehouse.sql_models import load_macros, run_models

AGG = ("AGN", "Seyfert", "XB", "YSO")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory):
    return classified_copy(tmp_path_factory, "validation")


def test_split_is_stratified_and_seeded() -> None:
    labels = np.array(["QSO"] * 100 + ["AGN"] * 40 + ["XB"] * 10 + ["YSO"])
    held_out = stratified_split(labels, 0.3, seed=3)
    for name, n in (("QSO", 100), ("AGN", 40), ("XB", 10)):
        assert abs(held_out[labels == name].sum() - 0.3 * n) <= 1
    assert not held_out[labels == "YSO"].any()  # a single reference stays in training
    assert np.array_equal(held_out, stratified_split(labels, 0.3, seed=3))
    assert not np.array_equal(held_out, stratified_split(labels, 0.3, seed=4))


def _memory_with_predictions(true: list[str], pred: list[str | None]) -> duckdb.DuckDBPyConnection:
    con = connect_memory()
    load_macros(con)
    run_models(con, layers=["seeds"])
    create_detection_class(con)
    n = len(true)
    frame = pl.DataFrame({"det_id": range(n), "name": [f"s{i % 7}" for i in range(n)],
                          "label_class": true, "cluster": [0] * n,
                          "split": ["test"] * n, "run_id": "r", "classify_run_id": "c"})
    con.register("f", frame.to_arrow())
    con.execute("CREATE TABLE results.validation_split AS SELECT * FROM f")
    con.execute("CREATE TABLE results.validation_detections AS SELECT det_id, name, cluster, "
                "label_class AS true_class, p.pred_class FROM f "
                "POSITIONAL JOIN (SELECT unnest(?) AS pred_class) AS p", [pred])
    con.execute("CREATE TABLE results.source_class AS SELECT 'x' AS hard_class, "
                "'x' AS soft_class WHERE FALSE")
    run_models(con, names=SQL_MODELS)
    return con


def test_confusion_and_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    classes = list(class_names())
    true = list(rng.choice(classes[:8], 400))  # TTau* and Orion_V* never occur
    pred = [t if rng.random() < 0.6 else rng.choice(classes) for t in true]
    pred[:5] = [None] * 5  # unclassifiable
    con = _memory_with_predictions(true, pred)
    confusion = con.sql("SELECT * FROM results.validation_confusion WHERE level = 'class'").pl()
    metrics = con.sql("SELECT * FROM results.validation_metrics WHERE level = 'class' "
                      "ORDER BY class_order").pl()
    agg_metrics = con.sql("SELECT * FROM results.validation_metrics WHERE level = 'aggregated'"
                          " ORDER BY class_order").pl()
    con.close()
    labels = [*classes, "unclassified"]
    y_pred = [p or "unclassified" for p in pred]
    expected = confusion_matrix(true, y_pred, labels=labels)
    got = np.zeros_like(expected)
    for rec in confusion.iter_rows(named=True):
        got[labels.index(rec["true_class"]), labels.index(rec["pred_class"])] = rec["n"]
    np.testing.assert_array_equal(got, expected)
    rows = confusion.filter(pl.col("row_total") > 0).group_by("true_class").agg(
        pl.col("fraction").sum())
    np.testing.assert_allclose(rows["fraction"], 1.0)
    assert confusion.filter(pl.col("true_class") == "TTau*")["fraction"].null_count() == 11

    p, r, _, support = precision_recall_fscore_support(true, y_pred, labels=classes,
                                                       zero_division=np.nan)
    np.testing.assert_allclose(metrics["recall"].fill_null(np.nan), r, equal_nan=True)
    np.testing.assert_allclose(metrics["precision"].fill_null(np.nan), p, equal_nan=True)
    np.testing.assert_array_equal(metrics["support"], support)
    agg = aggregated_classes()
    true_agg = [agg[t] for t in true]
    pred_agg = [agg.get(q, "unclassified") for q in y_pred]
    _, r_agg, _, _ = precision_recall_fscore_support(true_agg, pred_agg, labels=list(AGG),
                                                     zero_division=np.nan)
    np.testing.assert_allclose(agg_metrics["recall"], r_agg)


def test_kappa_matches_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    hard = rng.choice(["QSO", "AGN", "XB", "YSO"], 300)
    soft = np.where(rng.random(300) < 0.85, hard, rng.choice(["QSO", "AGN", "XB", "YSO"], 300))
    con = _memory_with_predictions(["QSO"], ["QSO"])
    con.execute("DELETE FROM results.source_class")
    con.register("v", pl.DataFrame({"hard_class": hard, "soft_class": soft}).to_arrow())
    con.execute("INSERT INTO results.source_class SELECT * FROM v")
    kappa = con.sql("SELECT * FROM results.vote_kappa").pl().row(0, named=True)
    con.close()
    assert kappa["kappa"] == pytest.approx(cohen_kappa_score(hard, soft), abs=1e-12)
    assert kappa["observed_agreement"] == pytest.approx(np.mean(hard == soft))


def test_changed_fractions_count_lost_and_ambiguous_sources() -> None:
    stored = pl.DataFrame({"name": ["a", "b", "c", "d"], "is_unique": [True, True, True, False],
                           "master_class": ["QSO", "HMXB", "YSO", None],
                           "agg_master_class": ["AGN", "XB", "YSO", None]})
    alt = pl.DataFrame({"name": ["a", "b", "d"], "is_unique": [True, True, False],
                        "master_class": ["AGN", "HMXB", None],
                        "agg_master_class": ["AGN", "XB", None]})
    # a: fine class changes, aggregated does not; c: lost (unclassified); d: ambiguous in both
    assert changed_fractions(stored, alt) == (0.5, 0.25)


def test_validate_command(warehouse, cli, report) -> None:
    result = cli("--warehouse", str(warehouse), "validate")
    assert "Cohen's kappa" in result.output
    con = duckdb.connect(str(warehouse), read_only=True)
    split = con.sql("SELECT split, count(*) AS n FROM results.validation_split GROUP BY 1").pl()
    n_refs = con.sql("SELECT count(*) FROM model.detection_roles WHERE role = 'reference'"
                     ).fetchall()[0][0]
    leaked = con.sql("SELECT count(*) FROM results.validation_detections AS v "
                     "JOIN results.validation_split AS s USING (det_id) "
                     "WHERE s.split = 'train'").fetchall()[0][0]
    metrics = con.sql("SELECT * FROM results.validation_metrics WHERE level = 'aggregated' "
                      "ORDER BY class_order").pl()
    groups = con.sql("SELECT * FROM results.validation_metrics WHERE level = 'group' "
                     "ORDER BY class_order").pl()
    kappa = con.sql("SELECT kappa FROM results.vote_kappa").fetchall()[0][0]
    stored_kappa = con.sql("SELECT avg((hard_class = soft_class)::INT) FROM "
                           "results.source_class").fetchall()[0][0]
    con.close()
    sizes = dict(split.iter_rows())
    assert sizes["train"] + sizes["test"] == n_refs
    assert sizes["test"] == pytest.approx(0.3 * n_refs, abs=10)
    assert leaked == 0
    report(f"validation on the {n_refs:,} references of the science tests' catalogue:")
    for row in [*metrics.iter_rows(named=True), *groups.iter_rows(named=True)]:
        report(f"  {row['class']:<16} recall {row['recall']:.2f}  chance "
               f"{row['predicted_share']:.2f}  (held out {row['support']})")
    assert metrics["class"].to_list() == list(AGG)
    for row in metrics.iter_rows(named=True):  # well above chance for every aggregated class
        assert row["recall"] > 1.5 * row["predicted_share"], row
    assert 0.5 < kappa <= 1 and stored_kappa > 0.8


STORED = ("SELECT md5(string_agg(concat_ws('|', name, hard_class, soft_class, master_class), "
          "',' ORDER BY name)) FROM results.source_class")


def test_stability_command(warehouse, cli, report) -> None:
    con = duckdb.connect(str(warehouse), read_only=True)
    before = con.sql(STORED).fetchall()
    con.close()
    result = cli("--warehouse", str(warehouse), "stability", "--seeds", "43", "--k", "5,7")
    assert "ARI" in result.output
    con = duckdb.connect(str(warehouse), read_only=True)
    table = con.sql("SELECT * FROM results.stability").pl()
    run = con.sql("SELECT status FROM meta.runs WHERE command = 'stability'").fetchall()
    after = con.sql(STORED).fetchall()
    con.close()
    assert after == before  # the alternatives were voted in memory, the results untouched
    rows = {r["alternative"]: r for r in table.iter_rows(named=True)}
    assert set(rows) == {"refit K=6, seed 42", "seed 43", "K=5", "K=7"}
    control = rows["refit K=6, seed 42"]
    # refitting the stored model reproduces the stored clusters and classes
    assert control["adjusted_rand_index"] > 0.99 and control["fine_changed_fraction"] < 0.01
    assert rows["K=5"]["n_components"] == 5 and rows["K=7"]["n_components"] == 7
    assert rows["K=5"]["adjusted_rand_index"] < 0.99  # a different K is a different partition
    for row in rows.values():
        report(f"  stability {row['alternative']:<20} ARI {row['adjusted_rand_index']:.3f}  "
               f"fine changed {row['fine_changed_fraction']:.1%}  aggregated changed "
               f"{row['agg_changed_fraction']:.1%}")
    assert run == [("ok",)]
