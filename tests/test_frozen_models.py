"""Frozen model versions: stored by classify, listed, shown, exported, imported; classify-new."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from frozen_fixtures import frozen_copy, read_frame

from xpipe.core.errors import ModelFileError, WarehouseError
from xpipe.models import file as model_file
from xpipe.models import frozen, store
from xpipe.warehouse.seeds import class_names

KEY = ["name", "obsid", "obi", "region_id"]
COMPARED = [*class_names(), "log_likelihood", "min_mahalanobis_sq", "anomaly_p"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return frozen_copy(tmp_path_factory, "frozen-models")


@pytest.fixture(scope="module")
def exported(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classify run's model version exported to a file with the CLI."""
    from click.testing import CliRunner

    from xpipe.cli.main import main

    path = tmp_path_factory.mktemp("export") / "model.npz"
    result = CliRunner().invoke(main, ["--warehouse", str(base["warehouse"]), "models",
                                       "export", "latest", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path



def test_classify_stores_an_immutable_verified_version(base, cli) -> None:
    wh = str(base["warehouse"])
    run_id = read_frame(base["warehouse"], "SELECT run_id FROM meta.runs WHERE command = "
                        "'classify' AND status = 'ok'")["run_id"].to_list()
    listed = cli("--warehouse", wh, "models", "list").output
    assert run_id[0] in listed and "classify" in listed
    shown = cli("--warehouse", wh, "models", "show", run_id[0][:17]).output
    con = duckdb.connect(wh, read_only=True)
    model = store.load(con)
    comps = con.sql("SELECT weight, covariance FROM model.gmm_components ORDER BY component").pl()
    stats = con.sql("SELECT cluster, class, n_references, usable FROM model.reference_stats "
                    "ORDER BY cluster, class").pl()
    stored = con.sql("SELECT cluster, class, n_references, usable FROM "
                     "model.version_reference_stats ORDER BY cluster, class").pl()
    scaling = con.sql("SELECT feature, log_offset, min_value, max_value FROM "
                      "model.preprocessing_params ORDER BY position").pl()
    con.close()
    assert model.version == run_id[0] and model.run_id == run_id[0]
    assert f"{model.content_hash} (verified)" in shown
    assert "references per cluster and class" in shown
    # the frozen copy is exactly what the run fitted and used
    np.testing.assert_array_equal(model.mixture.weights, comps["weight"].to_numpy())
    np.testing.assert_array_equal(model.mixture.covariances.reshape(len(comps), -1),
                                  np.array(comps["covariance"].to_list()))
    assert stored.equals(stats)
    assert [s.log_offset for s in model.scaling] == scaling["log_offset"].to_list()
    assert [s.max_value for s in model.scaling] == scaling["max_value"].to_list()
    assert model.selection == {"min_flux_significance_b": 5.0, "require_spectral_fits": True}
    assert model.provenance["counts"]["references"] == int(stats["n_references"].sum())


def test_export_import_empty_warehouse_gives_exactly_the_batch_results(
        base, exported, cli, tmp_path: Path, report) -> None:
    """The issue's "done when": a file of detections taken from the classified run, classified
    in an empty warehouse that only imported the model, gets exactly the batch's numbers."""
    detections = tmp_path / "detections.csv"
    # targets (classified by the batch), references and detections outside the selection
    cli("--warehouse", str(base["warehouse"]), "sql", "--out", str(detections),
        "SELECT r.* EXCLUDE (det_id, source_file, source_row) FROM raw.detections AS r "
        "LEFT JOIN model.detection_roles AS o USING (det_id) "
        "WHERE o.role IS NOT NULL OR r.det_id % 97 = 0 ORDER BY hash(r.det_id)")
    empty = tmp_path / "empty" / "xpipe.duckdb"
    imported = cli("--warehouse", str(empty), "models", "import", str(exported)).output
    assert "imported model" in imported
    tables = read_frame(empty, "SELECT schema_name || '.' || table_name AS t FROM duckdb_tables() "
                          "WHERE schema_name IN ('raw', 'results')")["t"].to_list()
    assert tables == []  # nothing but the model: no catalogue, no results
    out = tmp_path / "new.parquet"
    result = cli("--warehouse", str(empty), "classify-new", str(detections), "--out", str(out))
    new = pl.read_parquet(out)
    batch = read_frame(base["warehouse"], "SELECT d.*, r.obi, r.region_id FROM "
                                     "results.detection_class AS d JOIN raw.detections AS r "
                                     "USING (det_id)")
    joined = batch.join(new, on=KEY, suffix="_new")
    assert joined.height == batch.height > 3000
    for column in COMPARED:
        assert joined[column].equals(joined[f"{column}_new"]), column  # exactly, bit for bit
    assert joined["cluster"].equals(joined["cluster_new"])
    assert joined["pred_class"].equals(joined["pred_class_new"])
    assert joined["nearest_class"].equals(joined["nearest_class_new"])
    # detections outside the selection are classified when they can be, and flagged
    outside = new.filter(~pl.col("in_selection"))
    assert outside.height > 1000 and outside["reason"].null_count() < outside.height
    assert (new.filter(pl.col("status") == "not classified")["reason"].null_count()) == 0
    assert "votes of the sources in the file" in result.output
    report(f"classify-new in an empty warehouse with the imported model: {joined.height:,} "
           f"batch-classified detections reproduced bit for bit (of {new.height:,} in the file)")


def test_model_file_is_plain_and_verified(exported, cli, tmp_path: Path) -> None:
    with zipfile.ZipFile(exported) as archive:
        names = sorted(archive.namelist())
        meta = json.loads(archive.read("model.json"))
    assert names == sorted(["model.json", *(f"{n}.npy" for n in frozen.ARRAYS)])
    with np.load(exported, allow_pickle=False) as arrays:  # numpy reads it without pickle
        assert arrays["reference_pinv"].shape == (6, 10, 12, 12)
    assert meta["classes"] == list(class_names()) and len(meta["content_hash"]) == 64
    model = model_file.read_file(exported)
    assert model.content_hash == meta["content_hash"]

    def rewrite(path: Path, change: dict[str, bytes]) -> Path:
        with zipfile.ZipFile(exported) as src, zipfile.ZipFile(path, "w") as dst:
            for name in src.namelist():
                dst.writestr(name, change.pop(name, src.read(name)))
            for name, data in change.items():
                dst.writestr(name, data)
        return path

    tampered = dict(meta, scaling=[dict(meta["scaling"][0], transform="minmax"),
                                   *meta["scaling"][1:]])
    bad = rewrite(tmp_path / "tampered.npz", {"model.json": json.dumps(tampered).encode()})
    with pytest.raises(ModelFileError, match="content hash mismatch"):
        model_file.read_file(bad)
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    pickled = rewrite(tmp_path / "pickled.npz", {"reference_counts.npy": buffer.getvalue()})
    with pytest.raises(ModelFileError, match="not a plain numeric array"):
        model_file.read_file(pickled)
    extra = rewrite(tmp_path / "extra.npz", {"payload.pkl": b"\x80\x04."})
    with pytest.raises(ModelFileError, match="expected members"):
        model_file.read_file(extra)
    (tmp_path / "text.npz").write_text("not a zip")
    result = cli("--warehouse", str(tmp_path / "wh.duckdb"), "models", "import",
                 str(tmp_path / "text.npz"), expect_ok=False)
    assert result.exit_code == 1 and "not an xpipe model file" in result.output


def test_import_is_idempotent_and_versions_are_immutable(exported, cli, tmp_path: Path
                                                         ) -> None:
    wh = tmp_path / "wh.duckdb"
    assert "imported model" in cli("--warehouse", str(wh), "models", "import",
                                   str(exported)).output
    assert "already present" in cli("--warehouse", str(wh), "models", "import",
                                    str(exported)).output
    model = model_file.read_file(exported)
    con = duckdb.connect(str(wh))
    assert con.execute("SELECT count(*) FROM model.versions").fetchall() == [(1,)]
    other = replace(model, params={**model.params, "random_state": 1})
    with pytest.raises(WarehouseError, match="versions are immutable"):
        store.store(con, other, origin="import")
    con.execute("UPDATE model.version_components SET weight = weight * 1.0000001 "
                "WHERE component = 0")
    con.close()
    result = cli("--warehouse", str(wh), "models", "show", expect_ok=False)
    assert result.exit_code == 1 and "was altered" in result.output
    result = cli("--warehouse", str(wh), "models", "show", "nope", expect_ok=False)
    assert "no model version 'nope'" in result.output


def test_append_is_idempotent(base, exported, cli, tmp_path: Path) -> None:
    sample = tmp_path / "sample.parquet"
    con = duckdb.connect(str(base["warehouse"]), read_only=True)
    con.execute("COPY (SELECT r.* EXCLUDE (det_id, source_file, source_row) FROM "
                "raw.detections AS r JOIN model.detection_features USING (det_id) "
                f"ORDER BY det_id LIMIT 400) TO '{sample}'")
    con.close()
    wh = tmp_path / "wh.duckdb"
    first = cli("--warehouse", str(wh), "classify-new", str(sample), "--model", str(exported),
                "--append").output
    assert "400 new, 0 already stored" in first
    second = cli("--warehouse", str(wh), "classify-new", str(sample), "--append").output
    assert "0 new, 400 already stored" in second
    counts = read_frame(wh, "SELECT (SELECT count(*) FROM results.new_detection_class), "
                       "(SELECT count(DISTINCT name) FROM results.new_detection_class "
                       "WHERE status = 'classified'), "
                       "(SELECT count(*) FROM results.new_source_class), "
                       "(SELECT count(*) FROM meta.runs WHERE command = 'classify-new' "
                       "AND status = 'ok'), (SELECT count(*) FROM model.versions)").row(0)
    assert counts[0] == 400 and counts[2] == counts[1] and counts[3:] == (2, 1)


def test_unclassifiable_detection_gets_a_reason(base, csc_dir: Path, cli, tmp_path: Path
                                                ) -> None:
    """The real single-source VOTable has no spectral fits: a reason, not a crash."""
    out = tmp_path / "one.csv"
    result = cli("--warehouse", str(base["warehouse"]), "classify-new",
                 str(csc_dir / "csc2_single_source.vot"), "--out", str(out))
    assert "missing feature(s): powlaw_gamma, bb_kt" in result.output
    row = pl.read_csv(out).row(0, named=True)
    assert row["status"] == "not classified" and row["pred_class"] is None
    assert row["name"] == "2CXO J004307.5-092302" and row["in_selection"] is False


def test_real_sample_classifies_with_the_documented_result(base, csc_dir: Path, report
                                                           ) -> None:
    """README, classify-new: the 1,615 real CSC 2.0 rows against the simulated model. The file
    has no flux_significance_b, so every row is outside the paper's selection (flagged) but
    complete, so every row is classified; most QSO-labelled ones land in the large accretors."""
    from xpipe.api import Classifier

    sample = csc_dir / "csc2_detections_sample.csv"
    prediction = Classifier.load(base["warehouse"]).classify(
        pl.read_csv(sample, infer_schema_length=None))
    det = prediction.detections
    assert det.height == 1615 and (det["status"] == "classified").all()
    assert (~det["in_selection"]).all()
    assert prediction.sources.height == 1210
    labels = pl.read_csv(sample, columns=["name_1", "obsid", "region_id", "main_type"],
                         schema_overrides={"obsid": pl.Int32, "region_id": pl.Int32})
    agg = {"QSO": "AGN", "AGN": "AGN", "Seyfert_1": "Seyfert", "Seyfert_2": "Seyfert"}
    joined = det.join(labels.rename({"name_1": "name"}), on=["name", "obsid", "region_id"])
    qso = joined.filter(pl.col("main_type") == "QSO")
    large = qso["pred_class"].replace_strict(agg, default="other").is_in(["AGN", "Seyfert"])
    share = large.mean()
    report(f"real CSC sample: {det.height} classified, {det['out_of_range'].is_not_null().sum()}"
           f" flagged out of range; {share:.1%} of the {qso.height} QSO-labelled detections "
           "predicted AGN or Seyfert (large accretors)")
    assert qso.height == 1000 and share > 0.6


def test_real_sample_own_model_round_trip(csc_dir: Path, cli, tmp_path: Path) -> None:
    """Real rows end to end: classify the sample, export its model, import it into an empty
    warehouse, classify the same file: the targets get exactly the batch probabilities."""
    sample = csc_dir / "csc2_detections_sample.csv"
    wh, empty, model = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "m.npz"
    cli("--warehouse", str(wh), "warehouse", "--source", str(sample), "--labels", str(sample))
    cli("--warehouse", str(wh), "classify", "--no-significance-cut")
    cli("--warehouse", str(wh), "models", "export", "latest", str(model))
    cli("--warehouse", str(empty), "models", "import", str(model))
    cli("--warehouse", str(empty), "classify-new", str(sample), "--out", str(tmp_path / "o.csv"))
    new = pl.read_csv(tmp_path / "o.csv", schema_overrides={"obsid": pl.Int32, "obi": pl.Int16,
                                                            "region_id": pl.Int32})
    batch = read_frame(wh, "SELECT d.*, r.obi, r.region_id FROM results.detection_class AS d "
                      "JOIN raw.detections AS r USING (det_id)")
    joined = batch.join(new, on=KEY, suffix="_new", nulls_equal=True)
    assert joined.height == batch.height > 50
    assert (new["status"] == "classified").all() and new["in_selection"].all()
    for column in class_names():  # CSV keeps the shortest round-trip form: exact
        assert (joined[column] == joined[f"{column}_new"]).all(), column


def test_classify_new_errors_name_file_row_and_column(base, cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name,obsid,ra,dec\n2CXO J000000.0+000000,1,0.0,0.0\n")
    result = cli("--warehouse", str(base["warehouse"]), "classify-new", str(bad),
                 expect_ok=False)
    assert result.exit_code == 1 and "missing required column(s)" in result.output
    assert str(bad) in result.output and "hard_hm" in result.output


def test_dag_lists_the_sql_models(cli) -> None:
    output = cli("dag").output
    assert "`model.scaled_features`" in output and "`model.versions`" in output


def test_match_type_selection_is_recorded_and_applied_by_classify_new(
        base, cli, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """`classify --match-type u` selects on master_stack_assoc.match_type, records it in the
    model (and only then: the default run's selection and parameters have no such key), and
    classify-new applies the recorded option."""
    params = read_frame(base["warehouse"], "SELECT params FROM meta.runs WHERE command = "
                                           "'classify'")["params"].to_list()
    assert all("match_type" not in json.loads(p) for p in params)
    wh = frozen_copy(tmp_path_factory, "match-type")["warehouse"]
    with duckdb.connect(str(wh)) as con:
        con.execute("UPDATE raw.detections SET match_type = CASE WHEN det_id % 4 = 0 THEN 'a' "
                    "ELSE 'u' END")
    cli("--warehouse", str(wh), "classify", "--match-type", "u")
    selected = read_frame(wh, "SELECT count(*) AS n, count(*) FILTER (WHERE det_id % 4 = 0) "
                              "AS a FROM model.detection_features").rows()[0]
    assert selected[0] > 0 and selected[1] == 0
    con = duckdb.connect(str(wh), read_only=True)
    model = store.load(con)
    run_params = json.loads(con.execute("SELECT params FROM meta.runs WHERE command = "
                                        "'classify' ORDER BY started_at DESC LIMIT 1"
                                        ).fetchall()[0][0])
    con.close()
    assert model.selection == {"min_flux_significance_b": 5.0, "require_spectral_fits": True,
                               "match_type": "u"}
    assert run_params["match_type"] == "u"
    assert "match_type = 'u'" in frozen.describe(model)
    detections = tmp_path / "detections.csv"
    cli("--warehouse", str(wh), "sql", "--out", str(detections),
        "SELECT r.* EXCLUDE (det_id, source_file, source_row) FROM raw.detections AS r "
        "JOIN model.detection_features AS f USING (det_id) WHERE f.is_clean "
        "ORDER BY r.det_id LIMIT 400")
    frame = pl.read_csv(detections, infer_schema_length=None).with_columns(
        match_type=pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("a"))
        .otherwise(pl.lit("u")))
    frame.write_csv(detections)
    out = tmp_path / "out.parquet"
    cli("--warehouse", str(wh), "classify-new", str(detections), "--out", str(out))
    result = pl.read_parquet(out).join(frame.select(*KEY, "match_type"), on=KEY)
    assert result.height == 400
    assert result.filter(pl.col("in_selection"))["match_type"].unique().to_list() == ["u"]
    assert result.filter(pl.col("match_type") == "u")["in_selection"].all()
