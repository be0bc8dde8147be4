"""The derived features are written in SQL (sql/features/detection_features.sql); two Python
places must agree with it: the simulator computes them to draw its catalogue, and classify-new
names the raw columns behind each one when it says why a detection cannot be classified. These
tests fail when either drifts from the SQL."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
from factories import detections_frame

from xpipe.core.resources import sql_dir
from xpipe.predict.batch import ClassifyParams
from xpipe.predict.new import DERIVED
from xpipe.simulation.features import derive_features, paper_selection
from xpipe.warehouse.connection import connect_memory
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.seeds import feature_names
from xpipe.warehouse.sql_models import load_macros, run_models, set_parameters


def sql_derived() -> dict[str, str]:
    """The `derived` mapping of the feature SQL: feature → its SQL expression."""
    text = (sql_dir() / "features" / "detection_features.sql").read_text()
    block = re.search(r"\{% set derived = \{(.*?)\} %\}", text, re.S)
    assert block, "detection_features.sql no longer declares its derived features"
    return dict(re.findall(r"'(\w+)': '([^']*)'", block.group(1)))


def test_classify_new_names_the_sql_inputs_of_each_derived_feature() -> None:
    derived = sql_derived()
    assert set(DERIVED) == set(derived)
    for feature, expression in derived.items():
        columns = re.findall(r"\b(var_\w+)\b", expression)
        denominator = re.search(r"NULLIF\((\w+), 0\)", expression)
        assert denominator is not None
        assert set(DERIVED[feature]) == set(columns), feature
        assert DERIVED[feature][-1] == denominator.group(1), feature


def _frame(n: int) -> pl.DataFrame:
    """Valid detections with zero denominators, missing inputs and both sides of the cut."""
    rng = np.random.default_rng(3)
    row = pl.int_range(pl.len())
    return detections_frame(n, seed=3).with_columns(
        var_mean_b=pl.when(row % 7 == 0).then(0.0).otherwise(pl.col("var_mean_b")),
        var_sigma_h=pl.when(row % 5 == 0).then(None).otherwise(pl.col("var_sigma_h")),
        bb_kt=pl.when(row % 4 == 0).then(None).otherwise(pl.col("bb_kt")),
        flux_significance_b=pl.Series(rng.uniform(2, 9, n)),
    )


def _sql_features(frame: pl.DataFrame) -> pl.DataFrame:
    params = ClassifyParams()
    with connect_memory() as con:
        load_macros(con)
        create_table(con, "raw.detections")
        con.register("frame", frame.to_arrow())
        con.execute("INSERT INTO raw.detections BY NAME SELECT row_number() OVER () AS det_id, "
                    "'f' AS source_file, row_number() OVER () AS source_row, * FROM frame")
        set_parameters(con, params.sql_variables())
        run_models(con, layers=["seeds"], names=["model.stg_detections",
                                                 "model.detection_features"])
        return con.sql("SELECT * FROM model.detection_features ORDER BY det_id").pl()


def test_simulator_derives_features_and_selects_as_the_sql() -> None:
    frame = _frame(60)
    sql = _sql_features(frame)
    cols = {c: frame[c].cast(pl.Float64).fill_null(np.nan).to_numpy()
            for c in frame.columns if frame[c].dtype.is_numeric()}
    selected = paper_selection(cols)
    assert 0 < selected.sum() < len(selected)  # both sides of the cut are exercised
    assert sql["det_id"].to_list() == [i + 1 for i in np.flatnonzero(selected)]
    ours = derive_features(cols)[selected]
    theirs = sql.select(feature_names()).to_numpy().astype(float)
    assert np.isnan(ours).any()  # zero denominators and missing inputs are exercised
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours[~np.isnan(ours)], theirs[~np.isnan(theirs)], rtol=1e-15)
