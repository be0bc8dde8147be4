"""The SQL model runner: discovery, dependency order, and the checks it enforces."""

from __future__ import annotations

import duckdb
import pytest

from xpipe.warehouse.sql_models import (
    ModelCheckError,
    SqlModel,
    dependencies,
    discover_models,
    execution_order,
    run_checks,
)

LAYERS = ["staging", "features", "labels", "classify", "votes"]


def test_every_model_has_sql_grain_and_checks() -> None:
    models = discover_models()
    assert {m.layer for m in models.values()} >= {"seeds", *LAYERS}
    for model in models.values():
        assert model.grain.startswith("one row per"), model.name
        assert model.checks, f"{model.name} declares no checks"
        if model.materialized in {"table", "view"}:
            text = model.sql
            # the dbt-style chain: named CTEs ending in a final select
            assert "WITH " in text and "SELECT" in text, model.name
            assert model.sql_path.stem == model.name.split(".")[1]


def test_dependency_order() -> None:
    models = discover_models()
    order = [m.name for m in execution_order(models, models)]
    for model in models.values():
        for dep in dependencies(model, models):
            assert order.index(dep) < order.index(model.name), (dep, model.name)
    assert dependencies(models["model.scaled_features"], models) >= {
        "model.detection_features", "model.preprocessing_params"}


def _model(**checks) -> SqlModel:
    return SqlModel(name="results.t", layer="votes", description="", grain="one row per thing",
                    materialized="python", sql_path=None, checks=checks)


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA results")
    con.execute("CREATE TABLE results.t AS SELECT * FROM (VALUES (1, 0.25, 0.75, 'a'), "
                "(2, 0.5, 0.5, 'b')) v(id, p, q, label)")
    return con


def test_checks_pass_on_good_rows(con) -> None:
    run_checks(con, _model(unique=["id"], not_null=["id", "p"],
                           accepted_range=[{"columns": ["p", "q"], "min": 0, "max": 1}],
                           accepted_values=[{"column": "label", "values": ["a", "b"]}],
                           sum_to_one=[{"name": "p+q", "columns": ["p", "q"],
                                        "tolerance": 1e-12}]))


@pytest.mark.parametrize("checks, message", [
    ({"unique": ["p"]}, "p unique: 1 row(s) fail"),  # 0.25 twice
    ({"not_null": ["missing_label"]}, None),
    ({"accepted_range": [{"columns": ["p"], "min": 0.3}]}, "p in [0.3, inf]: 2 row(s) fail"),
    ({"accepted_values": [{"column": "label", "values": ["a"]}]}, "label in ['a']: 2 row(s) fail"),
    ({"sum_to_one": [{"name": "p only", "columns": ["p"], "tolerance": 1e-9}]},
     "p only sum to 1 within 1e-09: 3 row(s) fail"),
    ({"expression": [{"name": "p below q", "condition": "p < q"}]}, "p below q: 1 row(s) fail"),
])
def test_checks_fail_with_counts(con, checks, message) -> None:
    con.execute("INSERT INTO results.t VALUES (3, 0.25, 0.5, 'c')")
    if message is None:
        with pytest.raises(duckdb.Error):
            run_checks(con, _model(**checks))
        return
    with pytest.raises(ModelCheckError, match=r"results\.t \(one row per thing\) failed") as err:
        run_checks(con, _model(**checks))
    assert message in str(err.value)
