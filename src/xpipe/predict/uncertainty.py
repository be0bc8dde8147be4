"""Classification uncertainty from measurement errors: Monte Carlo draws through a frozen model.

Every classified detection's features with published confidence limits (the seed
sql/seeds/feature_errors.csv: the hardness ratios and the spectral fits) are drawn from split
normals (xpipe.method.montecarlo), each from the detection's own random stream; the other
features are held fixed. Each draw is then classified exactly as a new detection would be: the
draws are scaled by the warehouse's own SQL model (model.scaled_features, with the version's
stored parameters), assigned to clusters and scored by the scoring core (predict.scoring). A
draw whose features equal the measured ones therefore gets the stored probabilities bit for
bit.

Detections are handled in chunks of whole sources (detections × draws bounded by the chunk
size), so the hard and soft votes of every source are taken in every draw, and only
aggregates are kept: per detection and class the mean and central 68 % / 95 % intervals, per
detection how often its predicted class holds, per source how often its outcome (master class,
'ambiguous', or 'unclassified') holds. `xpipe uncertainty`, `classify-new --draws` and the
Python API all call `draw_chunk`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

from xpipe.core.config import Settings
from xpipe.core.errors import InputError, WarehouseError
from xpipe.core.progress import progress_bar
from xpipe.method import montecarlo as mc
from xpipe.models import store
from xpipe.models.frozen import FrozenModel
from xpipe.predict.batch import classify_run_id
from xpipe.predict.new import check_compatible
from xpipe.predict.scoring import feature_select, score_array
from xpipe.warehouse.connection import (
    cleaned_up,
    connect_memory,
    insert_frame,
    only_row,
    require_tables,
    scalar,
    transaction,
)
from xpipe.warehouse.contracts import create_table, detection_key
from xpipe.warehouse.provenance import RunRecorder, recorded_run
from xpipe.warehouse.seeds import (
    MeasurementError,
    aggregated_classes,
    class_names,
    feature_names,
    measurement_errors,
    physical_ranges,
)
from xpipe.warehouse.sql_models import (
    build,
    check_written,
    discover_models,
    load_macros,
    run_models,
)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

AMBIGUOUS = "ambiguous"
UNCLASSIFIED = "unclassified"
NO_ERRORS = "no published errors"
PARTIAL_ERRORS = "partial errors"


@dataclass(frozen=True)
class DrawParams:
    """How many draws, from which seed; `n_jobs` kernel threads (results do not depend on it)."""

    n_draws: int = 1000
    seed: int = 42
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        if self.n_draws < 1:
            raise InputError(f"--draws must be at least 1, got {self.n_draws}")

    def recorded(self) -> dict[str, object]:
        return {"draws": self.n_draws, "seed": self.seed}


def limit_columns() -> list[str]:
    """The raw columns holding confidence limits, in seed order."""
    return [c for e in measurement_errors() for c in (e.lower, e.upper)]


def chunk_detections(params: DrawParams, chunk_rows: int) -> int:
    """Detections per chunk: detections × draws stay within `chunk_rows` (at least one
    source per chunk, however many detections it has)."""
    return max(1, chunk_rows // params.n_draws)


class DrawScaler:
    """Scales drawn raw features with model.scaled_features, the SQL the warehouse scales its
    detections with, over the version's stored parameters, in a private in-memory DuckDB."""

    def __init__(self, model: FrozenModel, settings: Settings | None = None) -> None:
        self.con = connect_memory(settings)
        load_macros(self.con)
        run_models(self.con, layers=["seeds"])
        create_table(self.con, "model.preprocessing_params", replace=True)
        scaling = pl.DataFrame([vars(s) for s in model.scaling]).with_columns(
            run_id=pl.lit(model.run_id))
        self.con.register("__scaling", scaling.to_arrow())
        self.con.execute("INSERT INTO model.preprocessing_params BY NAME SELECT * FROM __scaling")
        self.con.unregister("__scaling")
        self.model = discover_models()["model.scaled_features"]

    def scale(self, raw: F64) -> F64:
        """(m, 12) raw features → (m, 12) scaled, row for row."""
        features = feature_names()
        table = pa.table({"det_id": pa.array(np.arange(len(raw), dtype=np.int64)),
                          **{f: pa.array(raw[:, j]) for j, f in enumerate(features)}})
        self.con.register("__draws", table)
        try:
            self.con.execute("CREATE OR REPLACE VIEW model.detection_features AS SELECT det_id, "
                             "'' AS name, 0::INTEGER AS obsid, * EXCLUDE (det_id), "
                             "TRUE AS is_clean FROM __draws")
            build(self.con, self.model)
            scaled = self.con.sql(f"SELECT {feature_select()} FROM model.scaled_features "
                                  "ORDER BY det_id").fetchnumpy()
        finally:
            self.con.unregister("__draws")
        return np.column_stack([scaled[f] for f in features]).astype(np.float64, copy=False)

    def close(self) -> None:
        self.con.close()


def drawn_features(frame: pl.DataFrame, params: DrawParams) -> tuple[F64, NDArray[np.bool_]]:
    """(n, D, 12) raw features of every draw, and (n, E) whether each error feature of each
    detection was drawn (both limits present; zero-width limits draw the value itself)."""
    features = list(feature_names())
    errors = measurement_errors()
    raw = frame.select(features).to_numpy().astype(np.float64)
    keys = frame.select(detection_key()).rows()
    z = mc.standard_normals(keys, params.seed, params.n_draws, len(errors))
    draws = np.repeat(raw[:, None, :], params.n_draws, axis=1)
    drawn = np.zeros((frame.height, len(errors)), dtype=bool)
    ranges = physical_ranges()
    for e, error in enumerate(errors):
        j = features.index(error.feature)
        value = raw[:, j]
        lower, upper = _limits(frame, error.lower), _limits(frame, error.upper)
        low, high = mc.split_normal_sigmas(value, lower, upper,
                                           mc.sigma_divisor(error.confidence_level))
        check_limits(frame, error, low, high)
        drawn[:, e] = mc.has_limits(value, lower, upper)
        values = mc.split_normal(value[:, None], low[:, None], high[:, None], z[:, :, e])
        bounds = ranges.get(error.feature)
        draws[:, :, j] = values if bounds is None else mc.clip_to_range(
            values, value[:, None], *_closed_bounds(bounds.min, bounds.max, bounds))
    return draws, drawn


def _limits(frame: pl.DataFrame, column: str) -> F64:
    if column not in frame.columns:  # a file without limits: nothing is drawn
        return np.full(frame.height, np.nan)
    return frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def _closed_bounds(lo: float | None, hi: float | None, bounds: object
                   ) -> tuple[float | None, float | None]:
    """An open bound (min_inclusive false) moves to the nearest double inside the range."""
    if lo is not None and not getattr(bounds, "min_inclusive", True):
        lo = float(np.nextafter(lo, np.inf))
    if hi is not None and not getattr(bounds, "max_inclusive", True):
        hi = float(np.nextafter(hi, -np.inf))
    return lo, hi


def check_limits(frame: pl.DataFrame, error: MeasurementError, low: F64, high: F64) -> None:
    """Limits must bracket the value: name the first detection where they do not."""
    bad = np.flatnonzero((low < 0) | (high < 0))
    if len(bad):
        row = frame.row(int(bad[0]), named=True)
        key = ", ".join(f"{k}={row[k]}" for k in detection_key())
        raise InputError(
            f"detection ({key}): {error.lower} = {row[error.lower]}, {error.feature} = "
            f"{row[error.feature]}, {error.upper} = {row[error.upper]}: the confidence limits "
            f"must satisfy {error.lower} <= {error.feature} <= {error.upper} "
            f"({len(bad)} detection(s) in this chunk do not)")


@dataclass
class ScoredDraws:
    """Every draw of a chunk's detections, scored: codes (n, D), -1 where unclassified;
    probabilities (n, D, C), NaN there; drawn (n, E) as drawn_features says."""

    codes: I64
    proba: F64
    drawn: NDArray[np.bool_]


def score_draws(frame: pl.DataFrame, model: FrozenModel, scaler: DrawScaler,
                params: DrawParams) -> ScoredDraws:
    raw, drawn = drawn_features(frame, params)
    n, d, f = raw.shape
    x = scaler.scale(raw.reshape(n * d, f))
    kernel = model.kernel()
    kernel.n_jobs = params.n_jobs
    _clusters, proba = score_array(x, kernel=kernel, mixture=model.mixture)
    proba = proba.reshape(n, d, -1)
    codes = np.where(np.isnan(proba).any(axis=2), mc.UNCLASSIFIED,
                     np.argmax(np.nan_to_num(proba, nan=-1.0), axis=2))
    return ScoredDraws(codes, proba, drawn)


# -- the chunk's results ------------------------------------------------------------------


@dataclass
class ChunkResult:
    """Per detection, per detection and class (long), per source."""

    detections: pl.DataFrame
    intervals: pl.DataFrame
    sources: pl.DataFrame
    rows: int = field(default=0)


def class_code(names: pl.Series) -> I64:
    """0-based class codes in seed order; -1 for a null."""
    codes = {name: i for i, name in enumerate(class_names())}
    return names.replace_strict(codes, default=-1, return_dtype=pl.Int64).to_numpy()


def detection_flags(drawn: NDArray[np.bool_]) -> pl.Series:
    n_drawn = drawn.sum(axis=1)
    flags = np.where(n_drawn == 0, NO_ERRORS,
                     np.where(n_drawn < drawn.shape[1], PARTIAL_ERRORS, None))
    return pl.Series("flag", flags.tolist(), dtype=pl.Utf8)


def detection_frames(frame: pl.DataFrame, scored: ScoredDraws) -> tuple[pl.DataFrame,
                                                                       pl.DataFrame]:
    """Per detection and per detection × class; NULL where nothing was drawn."""
    classes = list(class_names())
    nominal = frame.select(classes).to_numpy().astype(np.float64)
    summary = mc.summarize_detections(scored.proba, scored.codes, nominal)
    has_errors = scored.drawn.any(axis=1)
    nominal_code = class_code(frame["pred_class"])
    agreement = summary.pred_fraction[np.arange(frame.height), nominal_code]
    other_counts = summary.pred_fraction.copy()
    other_counts[np.arange(frame.height), nominal_code] = -1.0
    other = np.argmax(other_counts, axis=1)
    other_fraction = other_counts[np.arange(frame.height), other]
    errors = measurement_errors()
    names = np.array([e.feature for e in errors], dtype=object)

    def masked(values: F64) -> pl.Series:
        return pl.Series(np.where(has_errors, values, np.nan), nan_to_null=True)

    detections = frame.select("det_id", "name", "obsid", "pred_class").with_columns(
        drawn_features=pl.Series([", ".join(names[row]) or None for row in scored.drawn],
                                 dtype=pl.Utf8),
        flag=detection_flags(scored.drawn),
        pred_agreement=masked(agreement),
        unclassified_fraction=masked(summary.unclassified_fraction),
        other_class=pl.Series(np.where(has_errors & (other_fraction > 0),
                                       np.array(classes, dtype=object)[other], None).tolist(),
                              dtype=pl.Utf8),
        other_fraction=pl.Series(np.where(has_errors & (other_fraction > 0), other_fraction,
                                          np.nan), nan_to_null=True),
    )
    n, c = nominal.shape

    def long(values: F64) -> pl.Series:
        return pl.Series(np.where(has_errors[:, None], values, np.nan).reshape(n * c),
                         nan_to_null=True)

    intervals = pl.DataFrame({
        "det_id": np.repeat(frame["det_id"].to_numpy(), c),
        "name": np.repeat(frame["name"].to_numpy(), c),
        "class": np.tile(np.array(classes, dtype=object), n),
        "probability": nominal.reshape(n * c),
        "mean_probability": long(summary.mean),
        **{f"{side}{name}": long(summary.quantiles[name][i])
           for name in mc.INTERVALS for i, side in enumerate(("lo", "hi"))},
        "pred_fraction": long(summary.pred_fraction),
    }).select("det_id", "name", "class", "probability", "mean_probability", "lo68", "hi68",
              "lo95", "hi95", "pred_fraction")
    return detections, intervals


def outcome_codes(sources: pl.DataFrame) -> I64:
    """The nominal outcome of each source: its master class, or ambiguous (n_classes)."""
    n_classes = len(class_names())
    master = class_code(sources["master_class"])
    return np.where(sources["is_unique"].to_numpy(), master, n_classes)


def agg_codes() -> tuple[I64, list[str]]:
    """Outcome code (classes, then ambiguous) → aggregated outcome code; its names."""
    agg = aggregated_classes()
    names = list(dict.fromkeys(agg.values()))
    mapping = [names.index(agg[c]) for c in class_names()] + [len(names)]
    return np.array(mapping, dtype=np.int64), [*names, AMBIGUOUS]


def source_frame(frame: pl.DataFrame, sources: pl.DataFrame, scored: ScoredDraws
                 ) -> pl.DataFrame:
    """Per source: class stability and the most frequent other outcome, from the votes of
    every draw. `frame` is sorted by (name, obsid, det_id), `sources` by name, the same ones."""
    classes = list(class_names())
    n_classes = len(classes)
    names = frame["name"].to_numpy()
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    if len(starts) != sources.height or not (names[starts] == sources["name"].to_numpy()).all():
        raise ValueError("draw_chunk: the sources do not match the detections' sources")
    hard, soft = mc.source_votes(scored.proba, scored.codes, starts)
    drawn = mc.outcomes(hard, soft, n_classes)
    nominal = outcome_codes(sources)
    fine = mc.summarize_outcomes(drawn, nominal, n_classes + 1)
    mapping, agg_names = agg_codes()
    agg_draws = np.where(drawn < 0, mc.UNCLASSIFIED, mapping[np.maximum(drawn, 0)])
    agg_nominal = mapping[nominal]
    agg = mc.summarize_outcomes(agg_draws, agg_nominal, len(agg_names))
    with_errors = np.add.reduceat(scored.drawn.any(axis=1).astype(np.int64), starts)
    fully = np.add.reduceat(scored.drawn.all(axis=1).astype(np.int64), starts)
    counts = np.diff(np.r_[starts, frame.height])
    has = with_errors > 0
    labels = np.array([*classes, AMBIGUOUS, UNCLASSIFIED], dtype=object)  # -1 picks the last

    def masked(values: F64) -> pl.Series:
        return pl.Series(np.where(has, values, np.nan), nan_to_null=True)

    other = np.where(has & (fine.other != mc.NO_OTHER), labels[fine.other], None)
    return sources.select("name").with_columns(
        detection_count=pl.Series(counts, dtype=pl.Int64),
        detections_with_errors=pl.Series(with_errors, dtype=pl.Int64),
        flag=pl.Series(np.where(~has, NO_ERRORS, np.where(fully < counts, PARTIAL_ERRORS,
                                                            None)).tolist(), dtype=pl.Utf8),
        outcome=pl.Series(labels[nominal].tolist(), dtype=pl.Utf8),
        class_stability=masked(fine.stability),
        agg_class_stability=masked(agg.stability),
        hard_stability=masked((hard == class_code(sources["hard_class"])[:, None]).mean(axis=1)),
        soft_stability=masked((soft == class_code(sources["soft_class"])[:, None]).mean(axis=1)),
        other_outcome=pl.Series(other.tolist(), dtype=pl.Utf8),
        other_fraction=masked(np.where(fine.other != mc.NO_OTHER, fine.other_fraction, np.nan)),
        unclassified_fraction=masked((drawn < 0).mean(axis=1)),
    )


def draw_chunk(frame: pl.DataFrame, sources: pl.DataFrame, model: FrozenModel,
               scaler: DrawScaler, params: DrawParams) -> ChunkResult:
    """The uncertainty results of one chunk of whole sources.

    `frame`: the sources' classified detections sorted by (name, obsid, det_id), with det_id,
    the detection key, the 12 raw features, the limit columns (absent: nothing drawn), the
    nominal class probabilities and pred_class. `sources`: the same sources sorted by name,
    with their nominal votes (hard_class, soft_class, is_unique, master_class).
    """
    scored = score_draws(frame, model, scaler, params)
    detections, intervals = detection_frames(frame, scored)
    return ChunkResult(detections, intervals, source_frame(frame, sources, scored),
                       rows=frame.height)


# -- `xpipe uncertainty` on a classified warehouse ----------------------------------------

TABLES = ("results.detection_class_uncertainty", "results.detection_class_intervals",
          "results.source_class_stability")
NEEDED = ["raw.detections", "model.detection_features", "model.gmm_components",
          "results.detection_class", "results.source_class"]
SELECTED = "__uncertainty_detections"
# Draw rows (detections × draws) per chunk: XPIPE_CHUNK_ROWS / DRAW_ROW_SHARE. A draw row
# costs about four plain rows in memory (raw and scaled features, distances, probabilities,
# the per-class vote counts), so a chunk's arrays stay near those of a plain chunk.
DRAW_ROW_SHARE = 4


def select_detections(con: duckdb.DuckDBPyConnection, per_chunk: int) -> int:
    """A scratch table of every classified detection with what draw_chunk reads, numbered
    into chunks of whole sources (a chunk starts a new source once `per_chunk` detections are
    reached); returns the number of chunks."""
    classes = ", ".join(f'd."{c}"' for c in class_names())
    limits = ", ".join(f"r.{c}" for c in limit_columns())
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {SELECTED} AS
        WITH sources AS (
            SELECT name, count(*) AS n FROM results.detection_class
            WHERE pred_class IS NOT NULL GROUP BY name
        ),
        chunks AS (
            SELECT name, (sum(n) OVER (ORDER BY name ROWS UNBOUNDED PRECEDING) - n)
                // {int(per_chunk)} AS chunk
            FROM sources
        )
        SELECT c.chunk, d.det_id, r.name, r.obsid, r.obi, r.region_id,
               {feature_select('f.')}, {limits}, {classes}, d.pred_class
        FROM results.detection_class AS d
        JOIN chunks AS c USING (name)
        JOIN model.detection_features AS f USING (det_id)
        JOIN raw.detections AS r USING (det_id)
        WHERE d.pred_class IS NOT NULL
        ORDER BY c.chunk, r.name, r.obsid, d.det_id""")
    return int(scalar(con, f"SELECT coalesce(max(chunk) + 1, 0) FROM {SELECTED}"))


def chunk_frames(con: duckdb.DuckDBPyConnection, n_chunks: int
                 ) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(detections, their sources' stored votes) of each chunk, in draw_chunk's order."""
    for chunk in range(n_chunks):
        frame = con.sql(f"SELECT * EXCLUDE (chunk) FROM {SELECTED} WHERE chunk = ? "
                        "ORDER BY name, obsid, det_id", params=[chunk]).pl()
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
    require_tables(con, NEEDED, "run `xpipe classify` first")
    classify_run = classify_run_id(con)
    model = stored_model(con)
    check_compatible(model)
    per_chunk = chunk_detections(params, settings.chunk_rows // DRAW_ROW_SHARE)
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
                    bar.update(result.rows)
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
