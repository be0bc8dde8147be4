"""`xpipe uncertainty`: Monte Carlo draws of every classified detection of the warehouse
(predict.draws), stored as three results tables; and the same draws for `classify-new`.

Detections are read in chunks of whole sources into draw_chunk, and the results written in
the same transaction: an interruption or a failure leaves the warehouse as it was. The tables
carry the classification they were computed for (classify_run_id), so a later `xpipe
classify` makes them stale, as it does the other analyses of a classification.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import duckdb
import polars as pl

from xpipe.core.config import Settings
from xpipe.core.errors import WarehouseError
from xpipe.core.progress import progress_bar
from xpipe.models import store
from xpipe.models.frozen import FrozenModel
from xpipe.predict.batch import classify_run_id
from xpipe.predict.draws import (
    NO_ERRORS,
    TABLES,
    DrawParams,
    DrawScaler,
    chunk_detections,
    draw_chunk,
    draw_frame,
)
from xpipe.predict.new import Input, Prediction, check_compatible, prediction, scored_frame
from xpipe.predict.scoring import feature_select
from xpipe.warehouse.connection import (
    cleaned_up,
    first_row,
    insert_frame,
    only_row,
    require_tables,
    scalar,
    table_exists,
    transaction,
)
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.provenance import RunRecorder, recorded_run
from xpipe.warehouse.seeds import class_names, limit_columns
from xpipe.warehouse.sql_models import check_written

NEEDED = ["raw.detections", "model.detection_features", "model.detection_limits",
          "model.gmm_components", "results.detection_class", "results.source_class"]
SELECTED = "__uncertainty_detections"


def select_detections(con: duckdb.DuckDBPyConnection, per_chunk: int) -> int:
    """A scratch table numbering every classified detection's chunk of whole sources (a chunk
    starts a new source once `per_chunk` detections are reached); returns the number of
    chunks. Only (det_id, name, chunk): each chunk's columns are read when it is drawn, so
    memory does not grow with the classified detections."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {SELECTED} AS
        WITH detections AS (
            SELECT det_id, name FROM results.detection_class WHERE pred_class IS NOT NULL
        ),
        sources AS (
            SELECT name, count(*) AS n FROM detections GROUP BY name
        ),
        chunks AS (
            SELECT name, (sum(n) OVER (ORDER BY name ROWS UNBOUNDED PRECEDING) - n)
                // {int(per_chunk)} AS chunk
            FROM sources
        )
        SELECT d.det_id, d.name, c.chunk FROM detections AS d JOIN chunks AS c USING (name)""")
    return int(scalar(con, f"SELECT coalesce(max(chunk) + 1, 0) FROM {SELECTED}"))


def chunk_frames(con: duckdb.DuckDBPyConnection, n_chunks: int
                 ) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(detections, their sources' stored votes) of each chunk, in draw_chunk's order: the
    detection key, the 12 features, the usable limits, the stored probabilities."""
    classes = ", ".join(f'd."{c}"' for c in class_names())
    limits = ", ".join(f"l.{c}" for c in limit_columns())
    for chunk in range(n_chunks):
        frame = con.sql(f"""
            SELECT d.det_id, r.name, r.obsid, r.obi, r.region_id, {feature_select('f.')},
                   {limits}, {classes}, d.pred_class
            FROM {SELECTED} AS s
            JOIN results.detection_class AS d USING (det_id)
            JOIN model.detection_features AS f USING (det_id)
            JOIN raw.detections AS r USING (det_id)
            JOIN model.detection_limits AS l USING (det_id)
            WHERE s.chunk = ?
            ORDER BY r.name, r.obsid, d.det_id""", params=[chunk]).pl()
        sources = con.sql(
            "SELECT name, hard_class, soft_class, is_unique, master_class "
            f"FROM results.source_class WHERE name IN (SELECT name FROM {SELECTED} "
            "WHERE chunk = ?) ORDER BY name", params=[chunk]).pl()
        yield frame, sources


def stored_model(con: duckdb.DuckDBPyConnection) -> FrozenModel:
    """The frozen version of the stored classification (its id is the classify run's)."""
    run = classify_run_id(con)
    try:
        return store.load(con, run)
    except WarehouseError as exc:
        raise WarehouseError(f"the stored classification (run {run}) has no frozen model "
                             f"version ({exc}): run `xpipe classify` again") from exc


def run_uncertainty(con: duckdb.DuckDBPyConnection, settings: Settings, params: DrawParams
                    ) -> tuple[RunRecorder, dict[str, int]]:
    """Draw every classified detection and store the three results tables, as one
    transaction: an interruption (Ctrl-C, SIGTERM) or a failure leaves the warehouse as it was."""
    require_tables(con, ["raw.detections"], "load a catalogue first with `xpipe warehouse`")
    require_tables(con, NEEDED, "run `xpipe classify` first (again, if the classification "
                   "predates the confidence limits)")
    classify_run = classify_run_id(con)
    model = stored_model(con)
    check_compatible(model)
    per_chunk = chunk_detections(params, settings.chunk_rows)
    recorded = {**params.recorded(), "classify_run_id": classify_run}
    with recorded_run(con, "uncertainty", recorded) as run, transaction(con):
        stamp = {"n_draws": pl.lit(params.n_draws, pl.Int32), "run_id": pl.lit(run.run_id),
                 "classify_run_id": pl.lit(classify_run)}
        for table in TABLES:
            create_table(con, table, replace=True)
        scaler = DrawScaler(model, settings)
        with (run.stage("draws"), contextlib.closing(scaler),
              cleaned_up(lambda: con.execute(f"DROP TABLE IF EXISTS {SELECTED}"))):
            n_chunks = select_detections(con, per_chunk)
            total = int(scalar(con, f"SELECT count(*) FROM {SELECTED}"))
            with progress_bar(f"uncertainty ({params.n_draws:,} draws)", total=total,
                              unit="detections") as bar:
                for frame, sources in chunk_frames(con, n_chunks):
                    result = draw_chunk(frame, sources, model, scaler, params)
                    insert_frame(con, TABLES[0], result.detections.with_columns(**stamp))
                    insert_frame(con, TABLES[1], result.intervals.with_columns(
                        **{k: v for k, v in stamp.items() if k != "n_draws"}))
                    insert_frame(con, TABLES[2], result.sources.with_columns(**stamp))
                    bar.update(frame.height)
        with run.stage("checks"):
            for table in TABLES:
                check_written(con, table)
        counts = stored_counts(con)
        for key, value in counts.items():
            run.count(key, value)
    return run, counts


def stored_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Detections and sources drawn, and those without published errors."""
    one = only_row(con, f"""
        SELECT (SELECT count(*) FROM {TABLES[0]}),
               (SELECT count(*) FROM {TABLES[0]} WHERE flag = '{NO_ERRORS}'),
               (SELECT count(*) FROM {TABLES[2]}),
               (SELECT count(*) FROM {TABLES[2]} WHERE flag = '{NO_ERRORS}'),
               (SELECT count(*) FROM {TABLES[2]} WHERE class_stability >= 0.9)""")
    keys = ["detections", "detections_without_errors", "sources", "sources_without_errors",
            "sources_stable_90"]
    return dict(zip(keys, (int(v) for v in one), strict=True))


@dataclass(frozen=True)
class UncertaintyState:
    """Whether the stored uncertainty results can be shown for the stored classification."""

    status: Literal["absent", "stale", "current"]
    run_id: str | None = None  # the uncertainty run
    computed_for: str | None = None  # the classification it was computed for
    n_draws: int | None = None
    seed: int | None = None

    @property
    def current(self) -> bool:
        return self.status == "current"

    def message(self) -> str:
        """What a reader should do, in words ('' when the results are current)."""
        if self.status == "absent":
            return ("no uncertainty results in this warehouse: run `xpipe uncertainty` to draw "
                    "the measurement errors (intervals and class stability)")
        if self.status == "stale":
            return (f"stale: the uncertainty results (run {self.run_id}) were computed for an "
                    f"earlier classification ({self.computed_for}); `xpipe classify` ran since. "
                    "Rerun `xpipe uncertainty`")
        return ""


def uncertainty_state(con: duckdb.DuckDBPyConnection) -> UncertaintyState:
    """Absent (a table missing), stale (computed for another classification) or current."""
    if not all(table_exists(con, table) for table in TABLES):
        return UncertaintyState("absent")
    row = first_row(con, f"SELECT any_value(run_id), any_value(classify_run_id), "
                         f"any_value(n_draws) FROM {TABLES[2]}")
    if row is None or row[0] is None:
        return UncertaintyState("absent")
    params = first_row(con, "SELECT params FROM meta.runs WHERE run_id = ?", [row[0]])
    stored = {} if params is None else (json.loads(params[0]) if isinstance(params[0], str)
                                        else dict(params[0]))
    seed = stored.get("seed")
    status: Literal["stale", "current"] = ("current" if row[1] == classify_run_id(con)
                                           else "stale")
    return UncertaintyState(status, str(row[0]), str(row[1]), int(row[2]),
                            None if seed is None else int(seed))


def summary_text(con: duckdb.DuckDBPyConnection) -> str:
    """Per stored outcome: sources, those with errors, median class stability, share ≥ 0.9."""
    frame = con.sql(f"""
        SELECT outcome, count(*) AS sources,
               count(class_stability) AS with_errors,
               round(median(class_stability), 3) AS median_stability,
               round(avg((class_stability >= 0.9)::INTEGER), 3) AS share_stable_90,
               round(median(agg_class_stability), 3) AS median_agg_stability
        FROM {TABLES[2]} GROUP BY outcome ORDER BY sources DESC, outcome""").pl()
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        return ("class stability per stored outcome (share_stable_90: sources whose outcome "
                "holds in ≥ 90 % of the draws):\n" + str(frame))


def predict_with_draws(model: FrozenModel, inputs: Sequence[Input], params: DrawParams,
                       settings: Settings | None = None) -> Prediction:
    """`classify-new --draws`: the prediction of new.predict, with every classified
    detection drawn as `xpipe uncertainty` draws a stored one (same streams, same numbers)."""
    settings = settings or Settings()
    frame = scored_frame(model, inputs, settings)
    result = prediction(frame, model, settings)
    classified = frame.filter(pl.col("pred_class").is_not_null())
    sources = result.sources.select("name", "hard_class", "soft_class", "is_unique",
                                    "master_class")
    drawn = draw_frame(classified, sources, model, params, settings)
    return replace(result, uncertainty=drawn)
