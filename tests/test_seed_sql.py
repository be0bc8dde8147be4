"""The SQL models that list the classes or the features are Jinja templates rendered from
sql/seeds/: these tests fail when a model's rendered SQL and the seeds disagree (which features,
in which order, with which transform; which classes, in which order)."""

from __future__ import annotations

import re

import pytest
from factories import detections_frame

from xpipe.warehouse.connection import connect_memory, first_row
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.seeds import (
    class_names,
    feature_names,
    feature_transforms,
    seed_rows,
    template_rows,
)
from xpipe.warehouse.sql_models import (
    column_list,
    discover_models,
    load_macros,
    run_models,
    set_parameters,
)

SCALED = {  # how scaled_features.sql applies each transform (the macros of macros.sql)
    "log_minmax": r"model\.log_minmax\(c\.(\w+), p\.\1_off, p\.\1_lo, p\.\1_hi\) AS \1",
    "minmax": r"model\.minmax\(c\.(\w+), p\.\1_lo, p\.\1_hi\) AS \1",
    "none": r"c\.(\w+)",
}


def cte(model: str, name: str) -> str:
    """The body of one named CTE of a model's rendered SQL."""
    sql = discover_models()[model].sql
    match = re.search(rf"^{name} AS \(\n(.*?)^\)", sql, re.S | re.M)
    assert match, f"{model} has no CTE {name}"
    return match.group(1)


def select_items(body: str) -> list[str]:
    """The items of the SELECT list of a CTE body (one per line, as the templates write them)."""
    lines = body.split("SELECT\n", 1)[1].split("\n    FROM ", 1)[0].splitlines()
    return [line.strip().rstrip(",") for line in lines if line.strip()]


def test_the_seed_lists_twelve_features_and_ten_classes() -> None:
    assert len(feature_names()) == 12 and len(class_names()) == 10
    assert [int(r["position"]) for r in template_rows("features")] == list(range(1, 13))
    assert set(feature_transforms().values()) == {"none", "minmax", "log_minmax"}


def test_scaled_features_applies_each_seed_transform_in_seed_order() -> None:
    found = []
    for item in select_items(cte("model.scaled_features", "scaled"))[3:]:  # after the ids
        transform = next(t for t, pattern in SCALED.items() if re.fullmatch(pattern, item))
        found.append((re.fullmatch(SCALED[transform], item).group(1), transform))
    assert found == list(feature_transforms().items())


def test_preprocessing_fits_every_seed_feature() -> None:
    unpivot = re.search(r"ON (.*)\n\s*INTO NAME", cte("model.preprocessing_params", "long"))
    assert unpivot and unpivot.group(1).split(", ") == list(feature_names())


def test_detection_features_computes_the_seed_features_in_order() -> None:
    items = select_items(cte("model.detection_features", "derived"))
    assert items[:7] == ["det_id", "name", "obsid", "ra", "dec", "flux_significance_b",
                         "match_type"]
    assert [item.split(" AS ")[-1] for item in items[7:]] == list(feature_names())
    flagged = cte("model.detection_features", "flagged")
    complete = re.search(r"coalesce\(\n\s*(.*),\n\s*FALSE\n\s*\) AS has_all_features", flagged)
    assert complete and complete.group(1).split(" IS NOT NULL AND ") == \
        [*feature_names()[:-1], f"{feature_names()[-1]} IS NOT NULL"]
    domain = re.search(r"coalesce\(\n\s*(.*),\n\s*FALSE\n\s*\) AS in_log_domain", flagged)
    assert domain and domain.group(1).replace(" >= 0", "").split(" AND ") == \
        [f for f, t in feature_transforms().items() if t == "log_minmax"]


@pytest.mark.parametrize("model", ["results.uniquely_classified",
                                   "results.ambiguous_classification"])
def test_published_layouts_pivot_the_seed_classes(model: str) -> None:
    pivot = cte(model, "probabilities")
    quoted = ", ".join("'" + c.replace("'", "''") + "'" for c in class_names())
    assert f"ON class IN ({quoted})" in pivot
    assert column_list(class_names(), "p") in select_items(cte(model, "final"))


def test_class_probabilities_unpivot_the_seed_classes() -> None:
    body = cte("results.source_class_probs", "long")
    aliases = re.findall(r"\) AS (\"[^\"]+\"|\w+)", body)
    assert [a.strip('"') for a in aliases] == list(class_names())


def test_feature_models_built_from_the_seed() -> None:
    """On rows: the fitted scaling has one row per seed feature, with its position and
    transform (the runner verifies each model's columns and checks as it builds them)."""
    con = connect_memory()
    load_macros(con)
    create_table(con, "raw.detections")
    con.register("frame", detections_frame(40).to_arrow())
    con.execute("INSERT INTO raw.detections BY NAME SELECT row_number() OVER () AS det_id, "
                "'f' AS source_file, row_number() OVER () AS source_row, * FROM frame")
    set_parameters(con, {"min_flux_significance_b": 5, "require_spectral_fits": True,
                         "run_id": "r"})
    run_models(con, layers=["seeds"], names=["model.stg_detections",
                                             "model.detection_features",
                                             "model.preprocessing_params",
                                             "model.scaled_features"])
    params = con.execute("SELECT feature, position::VARCHAR, transform FROM "
                         "model.preprocessing_params ORDER BY position").fetchall()
    assert params == [(r["feature"], r["position"], r["transform"])
                      for r in seed_rows("features")]
    assert first_row(con, "SELECT count(*) FROM model.scaled_features")[0] > 0
