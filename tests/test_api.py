"""The Python API: Classifier.load / from_file, predict_proba, predict, score_samples."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from frozen_fixtures import frozen_copy

from xpipe.api import Classifier
from xpipe.warehouse.contracts import SchemaError
from xpipe.warehouse.seeds import class_names

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Raw CSC rows of the batch run's targets (shuffled) and the batch's results for them."""
    paths = frozen_copy(tmp_path_factory, "api")
    con = duckdb.connect(str(paths["warehouse"]), read_only=True)
    raw = con.sql("SELECT r.* EXCLUDE (det_id, source_file, source_row), d.det_id AS batch_id "
                  "FROM raw.detections AS r JOIN results.detection_class AS d USING (det_id) "
                  "ORDER BY hash(d.det_id)").pl()
    batch = con.sql("SELECT * FROM results.detection_class").pl()
    con.close()
    ordered = raw.select("batch_id").join(batch, left_on="batch_id", right_on="det_id",
                                          maintain_order="left")
    return {"warehouse": paths["warehouse"], "frame": raw.drop("batch_id"), "batch": ordered}


def test_predict_proba_equals_the_batch_pipeline(data) -> None:
    clf = Classifier.load(data["warehouse"])
    frame, batch = data["frame"], data["batch"]
    proba = clf.predict_proba(frame)
    assert list(clf.classes_) == list(class_names())
    assert proba.shape == (batch.height, 10) and batch.height > 3000
    np.testing.assert_array_equal(proba, batch.select(class_names()).to_numpy())  # exact
    assert clf.predict(frame).tolist() == batch["pred_class"].to_list()
    np.testing.assert_array_equal(clf.score_samples(frame), batch["log_likelihood"].to_numpy())
    # an Arrow table and a slice give the same rows: a row does not depend on the others
    np.testing.assert_array_equal(clf.predict_proba(frame.to_arrow().slice(10, 25)),
                                  proba[10:35])


def test_pandas_frame(data) -> None:
    pytest.importorskip("pandas", reason="pandas is optional: the API accepts it when present")
    clf = Classifier.load(data["warehouse"])
    head = data["frame"].head(200)
    np.testing.assert_array_equal(clf.predict_proba(head.to_pandas()), clf.predict_proba(head))


def test_rows_that_cannot_be_classified_are_nan_and_none(data) -> None:
    clf = Classifier.load(data["warehouse"])
    frame = data["frame"].head(3).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("bb_kt")).alias("bb_kt"))
    proba = clf.predict_proba(frame)
    assert np.isnan(proba[1]).all() and not np.isnan(proba[[0, 2]]).any()
    assert clf.predict(frame)[1] is None
    reason = clf.classify(frame).detections["reason"].to_list()
    assert reason == [None, "missing feature(s): bb_kt", None]
    assert clf.predict_proba(data["frame"].head(0)).shape == (0, 10)


def test_bad_input_is_a_clear_error(data) -> None:
    clf = Classifier.load(data["warehouse"])
    with pytest.raises(SchemaError, match=r"missing required column\(s\).*bb_kt"):
        clf.predict_proba(data["frame"].drop("bb_kt"))
    with pytest.raises(TypeError, match="Polars or pandas DataFrame or an Arrow table"):
        clf.predict_proba([[1.0] * 12])


def test_from_file_and_repr(data, tmp_path: Path) -> None:
    from xpipe.models import file as model_file
    from xpipe.models import store

    con = duckdb.connect(str(data["warehouse"]), read_only=True)
    model = store.load(con)
    con.close()
    model_file.write_file(model, tmp_path / "m.npz")
    clf = Classifier.from_file(tmp_path / "m.npz")
    assert clf.version_ == model.version and model.content_hash[:12] in repr(clf)
    head = data["frame"].head(50)
    np.testing.assert_array_equal(clf.predict_proba(head),
                                  Classifier.load(data["warehouse"]).predict_proba(head))


def test_readme_example_runs(data, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The README's Python example, run as written against this warehouse."""
    text = README.read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lacks the <!-- api-example --> block"
    monkeypatch.chdir(data["warehouse"].parent)
    (data["warehouse"].parent / "warehouse").mkdir(exist_ok=True)
    link = data["warehouse"].parent / "warehouse" / "xpipe.duckdb"
    if not link.exists():
        link.symlink_to(data["warehouse"])
    exec(compile(match.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "QSO" in out and "pred_class" in out


def test_reasons_and_flags(data) -> None:
    """Out-of-range values are classified and flagged; a negative log feature, or a cluster
    without usable classes, is a reason."""
    from dataclasses import replace

    clf = Classifier.load(data["warehouse"])
    frame = data["frame"].head(3).with_columns(
        powlaw_gamma=pl.Series([50.0, 2.0, 2.0]), bb_kt=pl.Series([1.0, -1.0, 1.0]),
        hard_hm=pl.Series([0.1, 0.1, 1.5]))
    det = clf.classify(frame).detections
    assert det["out_of_range"][0].startswith("powlaw_gamma ") and det["status"][0] == "classified"
    assert det["reason"][1] == "negative bb_kt = -1.0: outside the log transform's domain"
    assert det["out_of_range"][2] == "hard_hm = 1.5" and det["status"][2] == "classified"
    cluster = int(det["cluster"][0])
    counts = clf.model.reference_counts.copy()
    counts[cluster] = 0
    crippled = Classifier(replace(clf.model, reference_counts=counts)).classify(frame).detections
    assert crippled["reason"][0] == (f"cluster {cluster} has no reference class with ≥ 12 "
                                     "references")
    assert crippled["log_likelihood"][0] == det["log_likelihood"][0]
