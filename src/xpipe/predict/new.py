"""Classify new detections with a frozen model: the same SQL features, scaling and kernel.

Detections (files, or Arrow tables from the Python API) are validated against the
raw.detections contract and loaded into an in-memory DuckDB, where the warehouse's own SQL
models derive the 12 features (model.detection_features) and scale them
(model.scaled_features) with the version's stored parameters; nothing is refitted. Clusters,
probabilities and anomaly scores come from the functions the batch run used, whose result for a
row does not depend on the other rows, so a detection gets exactly the numbers it got there.

A detection that cannot be classified (a feature missing, a zero denominator, a value outside
the log transform's domain, a cluster without usable reference classes) gets a `reason`, not
an error. Values outside the range the scaling was fitted on, and detections outside the
model's selection (e.g. flux_significance_b ≤ 5 or absent), are classified and flagged
(`out_of_range`, `in_selection`), since the model is still defined there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import duckdb
import polars as pl
import pyarrow as pa

from xpipe.core.config import Settings
from xpipe.core.errors import ModelFileError
from xpipe.core.progress import progress_bar
from xpipe.ingest.files import (
    append_input,
    check_unique,
    create_staging,
    expand_inputs,
    open_arrow,
    open_input,
)
from xpipe.models import store
from xpipe.models.frozen import FrozenModel, selection_variables
from xpipe.predict.draws import DrawResult
from xpipe.predict.scoring import score_chunk, vote_in_memory
from xpipe.warehouse.connection import connect_memory, staging_name, swap_in
from xpipe.warehouse.contracts import (
    SchemaError,
    contract,
    detection_key,
    load_schema,
)
from xpipe.warehouse.dtypes import arrow_type, polars_schema
from xpipe.warehouse.seeds import (
    PhysicalRange,
    class_names,
    feature_names,
    limit_columns,
    physical_ranges,
)
from xpipe.warehouse.sql_models import (
    build,
    discover_models,
    load_macros,
    run_models,
    set_parameters,
)

Input = Path | tuple[pa.Table, str]  # a file or folder of Parquet parts, or (table, its name)

KEY = detection_key()
GENERATED = ("det_id", "source_file", "source_row")  # raw.detections columns a load adds
DERIVED = {  # feature: the raw columns it is computed from, denominator last
    "var_ratio_b": ("var_sigma_b", "var_mean_b"), "var_ratio_h": ("var_sigma_h", "var_mean_h"),
    "var_ratio_s": ("var_sigma_s", "var_mean_s"),
    "var_newq_b": ("var_max_b", "var_min_b", "var_mean_b"),
}
VOTE_COLUMNS = ("hard_class", "soft_class", "master_class", "agg_master_class")


@dataclass(frozen=True)
class Prediction:
    """One row per input detection (input order) and one row per source with its votes; with
    draws, the Monte Carlo results of the classified detections and their sources."""

    detections: pl.DataFrame
    sources: pl.DataFrame
    model_version: str
    uncertainty: DrawResult | None = None  # with draws (predict.uncertainty.predict_with_draws)


def output_columns() -> dict[str, str]:
    """Columns of a prediction's detections with their DuckDB types: those of
    results.new_detection_class but the run that appends them."""
    return {c.name: c.type for c in contract("results.new_detection_class").columns
            if c.name != "appended_by"}


def check_compatible(model: FrozenModel) -> None:
    """The SQL models name the classes and features: the version must use the same ones."""
    if model.features != feature_names() or model.classes != class_names():
        raise ModelFileError(f"model {model.version} uses features {list(model.features)} and "
                             f"classes {list(model.classes)}; this xpipe's SQL models compute "
                             f"{list(feature_names())} and {list(class_names())}")


def frame_table(table: pa.Table) -> pa.Table:
    """An in-memory frame as the loader expects it: the ids a warehouse adds are dropped (the
    frame may come from one), and all-null columns (pandas and Polars give them no type) get
    their contract type."""
    table = table.drop_columns([c for c in GENERATED if c in table.column_names])
    types = {}
    for column in load_schema("raw.detections").columns:
        for name in (column.name, *column.aliases):
            types[name.lower()] = arrow_type(column.type)
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type) and field.name.lower() in types:
            table = table.set_column(i, field.name, table.column(i).cast(types[field.name.lower()]))
    return table


def load_detections(con: duckdb.DuckDBPyConnection, inputs: Sequence[Input]) -> int:
    """Validate every input against raw.detections and load it as raw.detections (det_id =
    input order); a wrong type, required column or duplicated detection stops it, naming the
    file, row and column."""
    create_staging(con, "raw.detections")
    loaded = 0
    with progress_bar("read detections", total=None) as bar:
        for item in inputs:
            if isinstance(item, tuple):
                parts = [open_arrow(con, frame_table(item[0]), item[1], f"__input_{loaded}")]
            else:
                parts = [open_input(con, p, f"__input_{loaded}_{i}")
                         for i, p in enumerate(expand_inputs(Path(item)))]
            for inp in parts:
                names = [r[0] for r in con.execute(f"DESCRIBE {inp.relation_sql}").fetchall()]
                clash = [c for c in GENERATED if names.count(c) > (c != "det_id")]
                if clash:
                    raise SchemaError(f"{inp.path}: has column(s) {', '.join(clash)}, which the "
                                      "warehouse generates; drop them (e.g. SELECT * EXCLUDE "
                                      "(det_id, source_file, source_row) FROM raw.detections)")
                count = append_input(con, "raw.detections", inp, id_offset=loaded,
                                     id_column="det_id")
                loaded += count
                bar.update(count)
    check_unique(con, staging_name("raw.detections"), list(KEY), what="detection key",
                 where='"region_id" IS NOT NULL')
    swap_in(con, "raw.detections")
    return loaded


def scale_features(con: duckdb.DuckDBPyConnection, model: FrozenModel) -> None:
    """model.detection_features and model.scaled_features over the loaded detections, with
    the version's selection (recorded per detection) and stored scaling parameters."""
    models = discover_models()
    load_macros(con)
    run_models(con, layers=["seeds"])
    # a physically impossible value is flagged (out_of_range), not excluded as `classify` does
    set_parameters(con, {**selection_variables(model.selection), "exclude_impossible": False})
    build(con, models["model.stg_detections"])
    build(con, models["model.detection_limits"])  # the usable limits, as `classify` keeps them
    build(con, models["model.detection_features"])
    con.execute("CREATE OR REPLACE TEMP TABLE __in_selection AS "
                "SELECT det_id FROM model.detection_features")
    set_parameters(con, selection_variables({"min_flux_significance_b": None,
                                             "require_spectral_fits": False}))
    build(con, models["model.detection_features"])  # every detection, to say why it fails
    store.restore_scaling(con, model)
    build(con, models["model.scaled_features"])


def feature_frame(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every loaded detection with its raw inputs, usable confidence limits
    (model.detection_limits), 12 features, flags and scaled features."""
    feats = feature_names()
    raw_inputs = sorted({c for cols in DERIVED.values() for c in cols})
    return con.sql(
        "SELECT r.det_id, r.source_file, r.source_row, "
        + ", ".join(f"r.{c}" for c in (*KEY, "ra", "dec", "flux_significance_b", *raw_inputs))
        + "".join(f", l.{c}" for c in limit_columns())
        + ", " + ", ".join(f'f."{c}"' for c in feats)
        + ", coalesce(f.is_clean, FALSE) AS is_clean, s.det_id IS NOT NULL AS in_selection, "
        + ", ".join(f'c."{c}" AS "scaled:{c}"' for c in feats)
        + " FROM raw.detections AS r LEFT JOIN model.detection_features AS f USING (det_id) "
          "LEFT JOIN __in_selection AS s USING (det_id) "
          "LEFT JOIN model.detection_limits AS l USING (det_id) "
          "LEFT JOIN model.scaled_features AS c USING (det_id) ORDER BY r.det_id"
    ).pl()


def _cause(feature: str) -> pl.Expr:
    """Why a feature is null: the raw column missing, or a zero denominator."""
    if feature not in DERIVED:
        return pl.lit(feature)
    *parts, denominator = DERIVED[feature]
    expr: Any = pl.when(pl.col(denominator) == 0).then(
        pl.lit(f"{feature} ({denominator} = 0)"))
    for column in (*parts, denominator):
        expr = expr.when(pl.col(column).is_null()).then(pl.lit(f"{feature} ({column} missing)"))
    return cast(pl.Expr, expr.otherwise(pl.lit(feature)))


def _joined(parts: Sequence[pl.Expr]) -> pl.Expr:
    """Non-null strings of `parts` joined with ', ', or null."""
    joined = pl.concat_str(parts, separator=", ", ignore_nulls=True)
    return pl.when(joined != "").then(joined)


def feature_reasons(frame: pl.DataFrame, model: FrozenModel) -> pl.Series:
    """Why a detection's features cannot be scaled; null where they can."""
    missing = _joined([pl.when(pl.col(f).is_null()).then(_cause(f)) for f in model.features])
    log_features = [s.feature for s in model.scaling if s.transform == "log_minmax"]
    negative = _joined([pl.when(pl.col(f) < 0).then(pl.format(f"{f} = {{}}", pl.col(f)))
                        for f in log_features])
    return frame.select(
        pl.when(missing.is_not_null()).then(pl.format("missing feature(s): {}", missing))
        .when(negative.is_not_null())
        .then(pl.format("negative {}: outside the log transform's domain", negative))
        .alias("reason")
    ).to_series()


def outside(rng: PhysicalRange) -> pl.Expr:
    """True where the column is outside its physical range (sql/seeds/physical_ranges.csv)."""
    col = pl.col(rng.column)
    conditions = []
    if rng.min is not None:
        conditions.append(col < rng.min if rng.min_inclusive else col <= rng.min)
    if rng.max is not None:
        conditions.append(col > rng.max if rng.max_inclusive else col >= rng.max)
    return pl.any_horizontal(conditions)


def range_flags(frame: pl.DataFrame, model: FrozenModel) -> pl.Series:
    """Features outside the range the scaling was fitted on (scaled < 0 or > 1), or, for the
    unscaled ones (hardness ratios, variability probabilities), outside their physical range
    in sql/seeds/physical_ranges.csv, e.g. `bb_kt 1.04`, `hard_hm = 1.5`."""
    ranges = physical_ranges()
    flags = []
    for s in model.scaling:
        if s.transform != "none":
            col = pl.col(f"scaled:{s.feature}")
            flags.append(pl.when((col < 0) | (col > 1))
                         .then(pl.format(f"{s.feature} {{}}", col.round(3))))
        elif s.feature in ranges:
            col = pl.col(s.feature)
            flags.append(pl.when(outside(ranges[s.feature]))
                         .then(pl.format(f"{s.feature} = {{}}", col)))
    return frame.select(_joined(flags).alias("out_of_range")).to_series()


def score(frame: pl.DataFrame, model: FrozenModel, chunk_rows: int) -> pl.DataFrame:
    """Cluster, probabilities, pred_class and anomaly scores of the clean rows of `frame`."""
    clean = frame.filter(pl.col("is_clean"))
    mixture, kernel, classes = model.mixture, model.kernel(), model.classes
    scaled = [f"scaled:{f}" for f in model.features]
    out = []
    with progress_bar("classify new detections", total=clean.height) as bar:
        for start in range(0, clean.height, chunk_rows):
            chunk = clean.slice(start, chunk_rows)
            rows = score_chunk(chunk, kernel=kernel, mixture=mixture, features=scaled,
                               anomaly=True)
            out.append(rows.drop("name", "obsid", "ra", "dec"))
            bar.update(chunk.height)
    if out:
        return pl.concat(out)
    return pl.DataFrame(schema=polars_schema("results.detection_class", [
        "det_id", "cluster", *classes, "pred_class", "log_likelihood", "min_mahalanobis_sq",
        "nearest_class", "anomaly_p"]))


def with_scores(frame: pl.DataFrame, model: FrozenModel, chunk_rows: int) -> pl.DataFrame:
    """`frame` with the scores of its clean rows (null elsewhere); a clean row whose cluster
    has no usable reference class gets that as its reason."""
    scored = frame.join(score(frame, model, chunk_rows), on="det_id", how="left",
                        maintain_order="left")
    no_class = pl.format(f"cluster {{}} has no reference class with ≥ {model.min_references} "
                         "references", pl.col("cluster"))
    return scored.with_columns(
        reason=pl.when(pl.col("reason").is_null() & pl.col("pred_class").is_null())
        .then(no_class).otherwise(pl.col("reason")))


def source_votes(detections: pl.DataFrame, settings: Settings | None = None) -> pl.DataFrame:
    """Hard and soft votes of the sources (METHOD §7) by the warehouse's voting SQL."""
    classified = detections.filter(pl.col("pred_class").is_not_null()).select(
        "det_id", "name", "obsid", "ra", "dec", "cluster", *class_names(), "pred_class")
    return vote_in_memory(classified, settings).select(
        "name", "detection_count", "hard_class", "soft_class", "is_unique", "master_class",
        "agg_master_class").sort(["detection_count", "name"], descending=[True, False])


def scored_frame(model: FrozenModel, inputs: Sequence[Input], settings: Settings
                 ) -> pl.DataFrame:
    """Every input detection (det_id = input order) with its raw inputs, confidence limits,
    features, flags, reason and scores."""
    check_compatible(model)
    con = connect_memory(settings)
    try:
        load_detections(con, inputs)
        scale_features(con, model)
        frame = feature_frame(con)
        frame = frame.with_columns(reason=feature_reasons(frame, model),
                                   out_of_range=range_flags(frame, model))
        return with_scores(frame, model, settings.chunk_rows)
    finally:
        con.close()


def predict(model: FrozenModel, inputs: Sequence[Input], settings: Settings | None = None
            ) -> Prediction:
    """Classify the detections of `inputs` with `model` (see the module docstring)."""
    settings = settings or Settings()
    return prediction(scored_frame(model, inputs, settings), model, settings)


def prediction(frame: pl.DataFrame, model: FrozenModel, settings: Settings) -> Prediction:
    """The Prediction of a scored_frame: output columns, and the votes of its sources."""
    sources = source_votes(frame, settings)
    votes = sources.select("name", *VOTE_COLUMNS)
    detections = frame.join(votes, on="name", how="left", maintain_order="left").with_columns(
        status=pl.when(pl.col("pred_class").is_not_null()).then(pl.lit("classified"))
        .otherwise(pl.lit("not classified")),
        model_version=pl.lit(model.version))
    columns = list(output_columns())
    detections = detections.select(columns).cast(
        polars_schema("results.new_detection_class", columns))
    return Prediction(detections, sources, model.version)
