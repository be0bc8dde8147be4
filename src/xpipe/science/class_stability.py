"""Class stability (`xpipe uncertainty`) seen from the catalogue: against the number of
detections and the flux significance, the share of stable sources per class, and — where the
truth is known (a simulated catalogue) — whether the stability is calibrated.

Everything here reads results.source_class_stability; a source without published errors (NULL
stability) is counted apart, never as 0 or 1.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from xpipe.core.errors import InputError

STABLE = 0.9  # "the class holds in >= 90 % of the draws"
CALIBRATION_BINS = (0.5, 0.9)  # < 0.5, 0.5-0.9, >= 0.9
COUNT_BINS = ((1, 1, "1"), (2, 2, "2"), (3, 3, "3"), (4, 5, "4–5"), (6, 10, "6–10"),
              (11, None, "≥ 11"))


def count_bin_sql(column: str) -> str:
    """A CASE naming the detection-count bin of `column` (COUNT_BINS)."""
    cases = " ".join(f"WHEN {column} >= {lo}" + (f" AND {column} <= {hi}" if hi else "")
                     + f" THEN '{label}'" for lo, hi, label in COUNT_BINS)
    return f"CASE {cases} END"


def per_source(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Each source with published errors: its stabilities, detection count and the highest
    broad-band flux significance among its classified detections."""
    return con.sql("""
        SELECT s.name, s.outcome, s.detection_count, s.class_stability, s.agg_class_stability,
               max(f.flux_significance_b) AS flux_significance
        FROM results.source_class_stability AS s
        JOIN results.detection_class AS d USING (name)
        JOIN model.detection_features AS f USING (det_id)
        WHERE s.class_stability IS NOT NULL AND d.pred_class IS NOT NULL
        GROUP BY ALL ORDER BY s.name""").pl()


def by_detection_count(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per detection-count bin: sources, quartiles of the class stability, share ≥ 0.9."""
    order = {label: i for i, (_, _, label) in enumerate(COUNT_BINS)}
    frame = con.sql(f"""
        SELECT {count_bin_sql('detection_count')} AS detections, count(*) AS sources,
               count(class_stability) AS with_errors,
               quantile_cont(class_stability, 0.25) AS q25,
               median(class_stability) AS median, quantile_cont(class_stability, 0.75) AS q75,
               avg((class_stability >= {STABLE})::INTEGER) AS share_stable,
               avg((agg_class_stability >= {STABLE})::INTEGER) AS share_agg_stable
        FROM results.source_class_stability GROUP BY 1""").pl()
    return frame.sort(pl.col("detections").replace_strict(order, return_dtype=pl.Int32))


def stable_share(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per stored outcome (master class or 'ambiguous'): sources, those without published
    errors, and the share of the others whose class (aggregated class) holds in ≥ 90 %."""
    return con.sql(f"""
        SELECT s.outcome, any_value(c.agg_class) AS agg_class, count(*) AS sources,
               count(*) FILTER (WHERE s.class_stability IS NULL) AS no_published_errors,
               median(s.class_stability) AS median_stability,
               avg((s.class_stability >= {STABLE})::INTEGER) AS share_stable,
               avg((s.agg_class_stability >= {STABLE})::INTEGER) AS share_agg_stable
        FROM results.source_class_stability AS s
        LEFT JOIN model.classes AS c ON c.class = s.outcome
        GROUP BY s.outcome
        ORDER BY min(c.class_order) NULLS LAST, s.outcome""").pl()


def stability_bin(column: str) -> pl.Expr:
    low, high = CALIBRATION_BINS
    return (pl.when(pl.col(column) < low).then(pl.lit(f"< {low}"))
            .when(pl.col(column) < high).then(pl.lit(f"{low}–{high}"))
            .otherwise(pl.lit(f"≥ {high}")))


def read_truth(path: Path) -> pl.DataFrame:
    """The simulator's truth table (name, true_class, agg_class): a Parquet file or the
    simulator's `truth/` folder of parts."""
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise InputError(f"{path}: expected the simulator's truth table (a Parquet file, or the "
                         "truth/ folder `xpipe simulate` writes)")
    truth = pl.concat([pl.read_parquet(f) for f in files])
    missing = {"name", "true_class", "agg_class"} - set(truth.columns)
    if missing:
        raise InputError(f"{path}: the truth table has no column(s) {sorted(missing)}")
    return truth.select("name", "true_class", pl.col("agg_class").alias("true_agg_class"))


def calibration(con: duckdb.DuckDBPyConnection, truth: pl.DataFrame) -> pl.DataFrame:
    """Accuracy of each uniquely classified source's class against the truth, in stability bins
    (< 0.5, 0.5–0.9, ≥ 0.9), per aggregated master class and overall; `level` 'aggregated'
    bins agg_class_stability and compares aggregated classes, 'class' the fine ones."""
    sources = con.sql("""
        SELECT s.name, c.master_class, c.agg_master_class, s.class_stability,
               s.agg_class_stability
        FROM results.source_class_stability AS s JOIN results.source_class AS c USING (name)
        WHERE c.is_unique AND s.class_stability IS NOT NULL""").pl()
    joined = sources.join(truth, on="name", how="inner")
    if joined.height < sources.height:
        raise InputError(f"{sources.height - joined.height} classified source(s) are not in the "
                         "truth table: is it the truth of this warehouse's catalogue?")
    parts = []
    for level, stability, predicted, true in (
            ("aggregated", "agg_class_stability", "agg_master_class", "true_agg_class"),
            ("class", "class_stability", "master_class", "true_class")):
        rows = joined.select(pl.col("agg_master_class").alias("agg_class"),
                             stability_bin(stability).alias("bin"),
                             (pl.col(predicted) == pl.col(true)).alias("correct"))
        for group in (rows, rows.with_columns(agg_class=pl.lit("all"))):
            parts.append(group.group_by("agg_class", "bin").agg(
                sources=pl.len(), correct=pl.col("correct").sum(),
                accuracy=pl.col("correct").mean()).with_columns(level=pl.lit(level)))
    order = {f"< {CALIBRATION_BINS[0]}": 0, f"{CALIBRATION_BINS[0]}–{CALIBRATION_BINS[1]}": 1,
             f"≥ {CALIBRATION_BINS[1]}": 2}
    return (pl.concat(parts).select("level", "agg_class", "bin", "sources", "correct",
                                    "accuracy")
            .sort("level", pl.col("agg_class") == "all", "agg_class",
                  pl.col("bin").replace_strict(order, return_dtype=pl.Int32)))
