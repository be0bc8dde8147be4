"""`xpipe classify-new`: classify a file of detections with a frozen model, show it, keep it.

The model is a version stored in the warehouse or an exported model file; the detections are
classified by xpipe.predict. `--append` stores them in results.new_detection_class (one row per
model version and detection: appending the same detections again replaces them, so they are
stored once) and their sources' votes, over every detection of the source appended with that
version, in results.new_source_class; all in one transaction, recorded in meta.runs.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from xpipe.core.config import Settings
from xpipe.models import file as model_file
from xpipe.models import store
from xpipe.models.frozen import FrozenModel
from xpipe.predict.new import KEY, Prediction, source_votes
from xpipe.warehouse.connection import connect, transaction
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.provenance import recorded_run
from xpipe.warehouse.seeds import class_names
from xpipe.warehouse.sql_models import check_written

DETECTIONS_TABLE = "results.new_detection_class"
SOURCES_TABLE = "results.new_source_class"


def resolve_model(settings: Settings, ref: str | None) -> FrozenModel:
    """`--model`: an exported model file, or a version in the warehouse (default: latest)."""
    if ref is not None and Path(ref).is_file():
        return model_file.read_file(Path(ref))
    with connect(settings, read_only=True) as con:
        return store.load(con, ref)


def write_output_file(frame: pl.DataFrame, path: Path) -> None:
    """Parquet for .parquet/.pq, CSV otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame.write_parquet(path)
    else:
        frame.write_csv(path)


def summary_lines(prediction: Prediction, max_reasons: int = 8) -> list[str]:
    """Counts a user checks first: classified, why not, flags."""
    det = prediction.detections
    classified = det.filter(pl.col("status") == "classified").height
    lines = [f"{det.height:,} detections with model {prediction.model_version}: "
             f"{classified:,} classified, {det.height - classified:,} not classified; "
             f"{prediction.sources.height:,} sources voted"]
    reasons = (det.filter(pl.col("reason").is_not_null()).group_by("reason").len()
               .sort("len", "reason", descending=[True, False]))
    for reason, n in reasons.head(max_reasons).iter_rows():
        lines.append(f"  not classified ({n:,}): {reason}")
    if reasons.height > max_reasons:
        rest = int(reasons["len"].slice(max_reasons).sum())
        lines.append(f"  not classified ({rest:,}): {reasons.height - max_reasons:,} other "
                     "reasons (see the reason column of --out)")
    flags = det.filter(pl.col("status") == "classified").select(
        (~pl.col("in_selection")).sum(), pl.col("out_of_range").is_not_null().sum()).row(0)
    if flags[0]:
        lines.append(f"  classified but outside the model's selection (in_selection false): "
                     f"{flags[0]:,}")
    if flags[1]:
        lines.append(f"  classified with values outside the fitted range (out_of_range): "
                     f"{flags[1]:,}")
    return lines


def output_frame(prediction: Prediction) -> pl.DataFrame:
    """What --out writes: every column per detection and, with draws, the per-detection
    uncertainty columns and per-class intervals (DrawResult.wide; NULL where not drawn)."""
    if prediction.uncertainty is None:
        return prediction.detections
    wide = prediction.uncertainty.wide()
    ids = pl.Series("det_id", range(1, prediction.detections.height + 1), dtype=pl.Int64)
    return pl.concat([prediction.detections, ids.to_frame().join(
        wide, on="det_id", how="left", maintain_order="left").drop("det_id")],
        how="horizontal")


def display_frames(prediction: Prediction) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The compact per-detection and per-source tables printed by the command (with draws:
    the share of draws keeping each detection's class, and each source's class stability)."""
    classes = list(class_names())
    det = prediction.detections.select(
        pl.col("source_row").alias("row"), "name", "obsid", "cluster", "pred_class",
        pl.max_horizontal(classes).round(3).alias("p_pred"), "anomaly_p",
        pl.coalesce("reason", "out_of_range").alias("note"))
    sources = prediction.sources
    if prediction.uncertainty is not None:
        drawn = output_frame(prediction).select(
            pl.col("pred_agreement").round(3).alias("p_keep"),
            pl.col("uncertainty_flag").alias("errors"))
        det = pl.concat([det, drawn], how="horizontal")
        sources = sources.join(prediction.uncertainty.sources.select(
            "name", pl.col("class_stability").round(3).alias("stability"),
            pl.col("flag").alias("errors")), on="name", how="left", maintain_order="left")
    return det, sources


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for table in (DETECTIONS_TABLE, SOURCES_TABLE):
        create_table(con, table, if_not_exists=True)


def _same_key(a: str, b: str) -> str:
    return " AND ".join(f"{a}.{k} IS NOT DISTINCT FROM {b}.{k}" for k in ("model_version", *KEY))


def revote(con: duckdb.DuckDBPyConnection, version: str, names: pl.Series, run_id: str
           ) -> None:
    """Recompute the votes of `names` over all their appended detections for `version`."""
    con.register("__names", pl.DataFrame({"name": names.unique()}).to_arrow())
    stored = con.sql(
        "SELECT row_number() OVER (ORDER BY d.name, d.obsid, d.obi, d.region_id) AS det_id, d.* "
        f"FROM {DETECTIONS_TABLE} AS d JOIN __names USING (name) "
        "WHERE d.model_version = ? AND d.pred_class IS NOT NULL", params=[version]).pl()
    votes = source_votes(stored)
    con.execute(f"DELETE FROM {SOURCES_TABLE} WHERE model_version = ? AND name IN "
                "(SELECT name FROM __names)", [version])
    con.register("__votes", votes.with_columns(model_version=pl.lit(version),
                                               appended_by=pl.lit(run_id)).to_arrow())
    con.execute(f"INSERT INTO {SOURCES_TABLE} BY NAME SELECT * FROM __votes")
    con.unregister("__votes")
    con.unregister("__names")


def append(con: duckdb.DuckDBPyConnection, prediction: Prediction, model: FrozenModel,
           source: str) -> dict[str, int]:
    """Store the prediction (and its model version, if new here) idempotently; returns counts."""
    params = {"file": source, "model_version": model.version}
    with recorded_run(con, "classify-new", params) as run, transaction(con):
        imported = store.store(con, model, origin="import")
        ensure_tables(con)
        rows = prediction.detections.with_columns(appended_by=pl.lit(run.run_id))
        con.register("__new", rows.to_arrow())
        try:
            replaced = con.execute(f"SELECT count(*) FROM {DETECTIONS_TABLE} AS t, __new AS n "
                                   f"WHERE {_same_key('t', 'n')}").fetchall()[0][0]
            con.execute(f"DELETE FROM {DETECTIONS_TABLE} AS t USING __new AS n "
                        f"WHERE {_same_key('t', 'n')}")
            con.execute(f"INSERT INTO {DETECTIONS_TABLE} BY NAME SELECT * FROM __new")
        finally:
            con.unregister("__new")
        revote(con, model.version, rows["name"], run.run_id)
        for table in (DETECTIONS_TABLE, SOURCES_TABLE):
            check_written(con, table)
        run.count("detections", rows.height)
        run.count("new", rows.height - int(replaced))
        run.count("already_stored", int(replaced))
        run.count("model_imported", int(imported))
    return run.row_counts
