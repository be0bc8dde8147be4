"""Monte Carlo draws of detections through a frozen model: the features with published errors
drawn, every draw classified as a new detection, and only the aggregates kept.

Every classified detection's features with published confidence limits (the seed
sql/seeds/confidence_limits.csv: the hardness ratios and the spectral fits; the usable ones, as
model.detection_limits keeps them) are drawn from split normals (xpipe.method.montecarlo), each
from the detection's own random stream; the other features are held fixed. Each draw is then
classified exactly as a new detection would be: the draws are scaled by the warehouse's own SQL
model (model.scaled_features, with the version's stored parameters), assigned to clusters and
scored by the scoring core (predict.scoring). A draw whose features equal the measured ones
therefore gets the stored probabilities bit for bit.

`draw_chunk` takes a chunk of whole sources (detections × draws bounded by the chunk size),
so the hard and soft votes of every source are taken in every draw, and keeps only aggregates:
per detection and class the mean and central 68 % / 95 % intervals, per detection how often its
predicted class holds, per source how often its outcome (master class, 'ambiguous', or
'unclassified') holds. `xpipe uncertainty`, `classify-new --draws` and the Python API all call
it (predict.uncertainty).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

from xpipe.core.config import Settings
from xpipe.core.errors import InputError
from xpipe.core.progress import progress_bar
from xpipe.method import montecarlo as mc
from xpipe.models import store
from xpipe.models.frozen import FrozenModel
from xpipe.predict.scoring import feature_select, score_array
from xpipe.warehouse.connection import connect_memory
from xpipe.warehouse.contracts import contract, detection_key
from xpipe.warehouse.dtypes import polars_schema
from xpipe.warehouse.seeds import (
    ConfidenceLimit,
    PhysicalRange,
    aggregated_classes,
    class_names,
    confidence_limits,
    feature_names,
    physical_ranges,
)
from xpipe.warehouse.sql_models import build, discover_models, load_macros, run_models

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

TABLES = ("results.detection_class_uncertainty", "results.detection_class_intervals",
          "results.source_class_stability")
RUN_COLUMNS = ("n_draws", "run_id", "classify_run_id")  # what `xpipe uncertainty` adds
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


# Draw rows (detections × draws) per chunk: XPIPE_CHUNK_ROWS / DRAW_ROW_SHARE. A draw row
# costs about four plain rows in memory (raw and scaled features, distances, probabilities,
# the per-class vote counts), so a chunk's arrays stay near those of a plain chunk.
DRAW_ROW_SHARE = 4


def chunk_detections(params: DrawParams, chunk_rows: int) -> int:
    """Detections per chunk, so that detections × draws stay within chunk_rows /
    DRAW_ROW_SHARE (a chunk still holds at least one whole source). More draws than one
    detection's share of a chunk would make memory grow with --draws: refused."""
    most = chunk_rows // DRAW_ROW_SHARE
    if params.n_draws > most:
        raise InputError(f"--draws {params.n_draws:,} is more than the {most:,} draws one "
                         f"detection may hold in memory (XPIPE_CHUNK_ROWS={chunk_rows:,} / "
                         f"{DRAW_ROW_SHARE}): use fewer draws, or raise XPIPE_CHUNK_ROWS")
    return max(1, most // params.n_draws)


class DrawScaler:
    """Scales drawn raw features with model.scaled_features, the SQL the warehouse scales its
    detections with, over the version's stored parameters, in a private in-memory DuckDB."""

    def __init__(self, model: FrozenModel, settings: Settings | None = None) -> None:
        self.con = connect_memory(settings)
        load_macros(self.con)
        run_models(self.con, layers=["seeds"])
        store.restore_scaling(self.con, model)
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
    errors = tuple(confidence_limits().values())
    raw = frame.select(features).to_numpy().astype(np.float64)
    keys = frame.select(detection_key()).rows()
    z = mc.standard_normals(keys, params.seed, params.n_draws, len(errors))
    draws = np.repeat(raw[:, None, :], params.n_draws, axis=1)
    drawn = np.zeros((frame.height, len(errors)), dtype=bool)
    ranges = physical_ranges()
    for e, error in enumerate(errors):
        j = features.index(error.feature)
        value = raw[:, j]
        lower, upper = _limits(frame, error.lolim), _limits(frame, error.hilim)
        low, high = mc.split_normal_sigmas(value, lower, upper,
                                           mc.sigma_divisor(error.level))
        check_limits(frame, error, low, high)
        drawn[:, e] = mc.has_limits(value, lower, upper)
        values = mc.split_normal(value[:, None], low[:, None], high[:, None], z[:, :, e])
        bounds = ranges.get(error.feature)
        draws[:, :, j] = values if bounds is None else mc.clip_to_range(
            values, value[:, None], *closed_bounds(bounds))
    return draws, drawn


def _limits(frame: pl.DataFrame, column: str) -> F64:
    if column not in frame.columns:  # a file without limits: nothing is drawn
        return np.full(frame.height, np.nan)
    return frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def closed_bounds(bounds: PhysicalRange) -> tuple[float | None, float | None]:
    """A physical range as the closed interval draws are clipped to: an open bound moves to
    the nearest double inside it."""
    lo, hi = bounds.min, bounds.max
    if lo is not None and not bounds.min_inclusive:
        lo = float(np.nextafter(lo, np.inf))
    if hi is not None and not bounds.max_inclusive:
        hi = float(np.nextafter(hi, -np.inf))
    return lo, hi


def check_limits(frame: pl.DataFrame, error: ConfidenceLimit, low: F64, high: F64) -> None:
    """Limits must bracket the value: name the first detection where they do not."""
    bad = np.flatnonzero((low < 0) | (high < 0))
    if len(bad):
        row = frame.row(int(bad[0]), named=True)
        key = ", ".join(f"{k}={row[k]}" for k in detection_key())
        raise InputError(
            f"detection ({key}): {error.lolim} = {row[error.lolim]}, {error.feature} = "
            f"{row[error.feature]}, {error.hilim} = {row[error.hilim]}: the confidence limits "
            f"must satisfy {error.lolim} <= {error.feature} <= {error.hilim} "
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


@dataclass(frozen=True)
class DrawResult:
    """Per detection, per detection and class (long), per source; the layouts of
    results.detection_class_uncertainty, results.detection_class_intervals and
    results.source_class_stability without the run columns."""

    detections: pl.DataFrame
    intervals: pl.DataFrame
    sources: pl.DataFrame

    @classmethod
    def empty(cls) -> DrawResult:
        """No detection: the tables' columns, typed by their contracts."""
        return cls(*(pl.DataFrame(schema=polars_schema(table, [
            c.name for c in contract(table).columns if c.name not in RUN_COLUMNS]))
            for table in TABLES))

    @classmethod
    def concat(cls, parts: Sequence[DrawResult]) -> DrawResult:
        return cls(*(pl.concat([getattr(p, f) for p in parts])
                     for f in ("detections", "intervals", "sources")))

    def wide(self) -> pl.DataFrame:
        """One row per detection: det_id, the per-detection columns, and per class
        {class}_mean, _lo68, _hi68, _lo95, _hi95 (classify-new's output layout)."""
        classes = list(class_names())
        n = self.detections.height
        stats = {"mean": "mean_probability", "lo68": "lo68", "hi68": "hi68", "lo95": "lo95",
                 "hi95": "hi95"}
        values = {short: self.intervals[long].cast(pl.Float64).fill_null(np.nan).to_numpy()
                  .reshape(n, len(classes)) for short, long in stats.items()}
        columns = {f"{c}_{short}": pl.Series(values[short][:, k], nan_to_null=True)
                   for k, c in enumerate(classes) for short in stats}
        return self.detections.select(
            "det_id", "drawn_features", pl.col("flag").alias("uncertainty_flag"),
            "pred_agreement", "unclassified_fraction", "other_class", "other_fraction",
        ).with_columns(**columns)


def class_code(names: pl.Series) -> I64:
    """0-based class codes in seed order; -1 for a null."""
    codes = {name: i for i, name in enumerate(class_names())}
    return names.replace_strict(codes, default=-1, return_dtype=pl.Int64).to_numpy()


def text_where(keep: NDArray[np.bool_], values: Sequence[object]) -> pl.Series:
    """`values` as text where `keep`, NULL elsewhere."""
    return pl.Series([str(v) if k else None for k, v in zip(keep.tolist(), values,
                                                             strict=True)], dtype=pl.Utf8)


def error_flags(none: NDArray[np.bool_], partial: NDArray[np.bool_]) -> pl.Series:
    """'no published errors' where nothing was drawn, 'partial errors' where something was
    held at its values for lack of limits, NULL otherwise."""
    flags = [NO_ERRORS if n else PARTIAL_ERRORS if p else None
             for n, p in zip(none.tolist(), partial.tolist(), strict=True)]
    return pl.Series(flags, dtype=pl.Utf8)


def detection_frames(frame: pl.DataFrame, scored: ScoredDraws) -> tuple[pl.DataFrame,
                                                                       pl.DataFrame]:
    """Per detection and per detection × class; NULL where nothing was drawn."""
    classes = list(class_names())
    nominal = frame.select(classes).to_numpy().astype(np.float64)
    summary = mc.summarize_detections(scored.proba, scored.codes, nominal)
    has_errors: NDArray[np.bool_] = np.asarray(scored.drawn.any(axis=1))
    nominal_code = class_code(frame["pred_class"])
    agreement = summary.pred_fraction[np.arange(frame.height), nominal_code]
    other_counts = summary.pred_fraction.copy()
    other_counts[np.arange(frame.height), nominal_code] = -1.0
    other = np.argmax(other_counts, axis=1)
    other_fraction = other_counts[np.arange(frame.height), other]
    errors = tuple(confidence_limits().values())
    names = np.array([e.feature for e in errors], dtype=object)

    def masked(values: F64) -> pl.Series:
        return pl.Series(np.where(has_errors, values, np.nan), nan_to_null=True)

    n_drawn = scored.drawn.sum(axis=1)
    detections = frame.select("det_id", "name", "obsid", "pred_class").with_columns(
        drawn_features=text_where(has_errors, [", ".join(names[row]) for row in scored.drawn]),
        flag=error_flags(n_drawn == 0, n_drawn < len(errors)),
        pred_agreement=masked(agreement),
        unclassified_fraction=masked(summary.unclassified_fraction),
        other_class=text_where(has_errors & (other_fraction > 0), [classes[k] for k in other]),
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
    labels = [*classes, AMBIGUOUS, UNCLASSIFIED]  # code -1 (unclassified) picks the last

    def masked(values: F64) -> pl.Series:
        return pl.Series(np.where(has, values, np.nan), nan_to_null=True)

    return sources.select("name").with_columns(
        detection_count=pl.Series(counts, dtype=pl.Int64),
        detections_with_errors=pl.Series(with_errors, dtype=pl.Int64),
        flag=error_flags(~has, fully < counts),
        outcome=pl.Series([labels[k] for k in nominal], dtype=pl.Utf8),
        class_stability=masked(fine.stability),
        agg_class_stability=masked(agg.stability),
        hard_stability=masked((hard == class_code(sources["hard_class"])[:, None]).mean(axis=1)),
        soft_stability=masked((soft == class_code(sources["soft_class"])[:, None]).mean(axis=1)),
        other_outcome=text_where(has & (fine.other != mc.NO_OTHER),
                                 [labels[k] for k in fine.other]),
        other_fraction=masked(np.where(fine.other != mc.NO_OTHER, fine.other_fraction, np.nan)),
        unclassified_fraction=masked((drawn < 0).mean(axis=1)),
    )


def draw_chunk(frame: pl.DataFrame, sources: pl.DataFrame, model: FrozenModel,
               scaler: DrawScaler, params: DrawParams) -> DrawResult:
    """The uncertainty results of one chunk of whole sources.

    `frame`: the sources' classified detections sorted by (name, obsid, det_id), with det_id,
    the detection key, the 12 raw features, the limit columns (absent: nothing drawn), the
    nominal class probabilities and pred_class. `sources`: the same sources sorted by name,
    with their nominal votes (hard_class, soft_class, is_unique, master_class).
    """
    scored = score_draws(frame, model, scaler, params)
    detections, intervals = detection_frames(frame, scored)
    return DrawResult(detections, intervals, source_frame(frame, sources, scored))


def source_slices(names: pl.Series, per_chunk: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of consecutive chunks of whole sources of names sorted by source:
    a chunk ends at the first source boundary at or after `per_chunk` rows."""
    values = names.to_list()
    start = 0
    while start < len(values):
        stop = min(start + per_chunk, len(values))
        while stop < len(values) and values[stop] == values[stop - 1]:
            stop += 1
        yield start, stop - start
        start = stop


def draw_frame(frame: pl.DataFrame, sources: pl.DataFrame, model: FrozenModel,
               params: DrawParams, settings: Settings) -> DrawResult:
    """draw_chunk over an in-memory frame (classify-new, the API), chunk by chunk of whole
    sources; `frame` and `sources` in draw_chunk's order."""
    frame = frame.sort("name", "obsid", "det_id")
    sources = sources.sort("name")
    per_chunk = chunk_detections(params, settings.chunk_rows)
    scaler = DrawScaler(model, settings)
    parts = []
    try:
        with progress_bar(f"draws ({params.n_draws:,} per detection)", total=frame.height,
                          unit="detections") as bar:
            for offset, length in source_slices(frame["name"], per_chunk):
                chunk = frame.slice(offset, length)
                names = chunk["name"].unique().implode()
                parts.append(draw_chunk(chunk, sources.filter(pl.col("name").is_in(names)),
                                        model, scaler, params))
                bar.update(length)
    finally:
        scaler.close()
    return DrawResult.concat(parts) if parts else DrawResult.empty()
