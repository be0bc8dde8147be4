"""`xpipe validate`: the paper's held-out validation (METHOD §8).

The labeled (reference) detections are split 70/30, stratified by class; the kernel is fitted on
the 70 % only, within the stored clusters, and the 30 % are classified as if they were
unlabeled. Python writes the split and the held-out predictions; the confusion matrices, the
per-class precision and recall, and Cohen's kappa between the hard and soft votes are SQL models
(sql/validation/). The stored classification is not touched.

The split is per detection, as in the paper: other detections of a held-out source may be in the
training part, which makes the numbers somewhat optimistic for sources with many detections.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from xpipe.core.errors import InputError, TooFewRowsError
from xpipe.predict.scoring import cleaned_rows, fit_reference_stats, score_chunk
from xpipe.science.common import (
    classify_params,
    classify_run_id,
    require_classified,
)
from xpipe.warehouse.connection import scalar, transaction
from xpipe.warehouse.provenance import RunRecorder, recorded_run
from xpipe.warehouse.sql_models import run_models, write_table

SQL_MODELS = ["model.class_levels", "results.validation_confusion", "results.validation_metrics",
              "results.vote_kappa"]


@dataclass(frozen=True)
class ValidateParams:
    test_size: float = 0.3
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0 < self.test_size < 1:
            raise InputError(f"--test-size must be between 0 and 1, got {self.test_size}")


def stratified_split(labels: NDArray[np.str_], test_size: float, seed: int) -> NDArray[np.bool_]:
    """Mask of the held-out rows of a stratified split (scikit-learn's train_test_split).

    A class with a single reference cannot be stratified; it stays in the training part.
    """
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    splittable = np.flatnonzero(np.isin(labels, values[counts >= 2]))
    held_out = np.zeros(len(labels), dtype=bool)
    if len(splittable) < 2:
        raise TooFewRowsError(f"{len(labels)} references: too few to hold any out")
    _, test_rows = train_test_split(splittable, test_size=test_size, random_state=seed,
                                    stratify=labels[splittable])
    held_out[test_rows] = True
    return held_out


def read_references(con: duckdb.DuckDBPyConnection, chunk_rows: int) -> pl.DataFrame:
    """Every reference detection with its class, stored cluster and scaled features."""
    chunks = list(cleaned_rows(con, role="reference", chunk_rows=chunk_rows,
                               desc="read references"))
    return pl.concat(chunks) if chunks else pl.DataFrame()


def held_out_predictions(references: pl.DataFrame, held_out: NDArray[np.bool_], *,
                         n_clusters: int, min_references: int) -> pl.DataFrame:
    """Fit the kernel on the training references and classify the held-out ones as targets:
    the results.detection_class layout plus their SIMBAD class, `true_class`."""
    train, test = references.filter(pl.Series(~held_out)), references.filter(pl.Series(held_out))
    kernel = fit_reference_stats([train], n_clusters=n_clusters, min_references=min_references)
    return score_chunk(test, kernel=kernel).with_columns(true_class=test["label_class"])


def split_frame(references: pl.DataFrame, held_out: NDArray[np.bool_]) -> pl.DataFrame:
    return references.select("det_id", "name", "label_class", "cluster").with_columns(
        split=pl.Series(np.where(held_out, "test", "train")))


@dataclass(frozen=True)
class ValidationResult:
    run: RunRecorder
    metrics: pl.DataFrame  # results.validation_metrics
    kappa: dict[str, float]  # results.vote_kappa

    def recall(self, level: str, name: str) -> float:
        row = self.metrics.filter((pl.col("level") == level) & (pl.col("class") == name))
        return float(row["recall"][0])


def run_validation(con: duckdb.DuckDBPyConnection, params: ValidateParams, chunk_rows: int
                   ) -> ValidationResult:
    require_classified(con)
    stored = classify_params(con)
    classify_run = classify_run_id(con)
    with recorded_run(con, "validate", {**asdict(params), "classify_run_id": classify_run}) as run:
        with run.stage("split_and_classify"):
            references = read_references(con, chunk_rows)
            if references.is_empty():
                raise TooFewRowsError("the stored classification has no reference detections "
                                      "(no SIMBAD match of the ten classes): nothing to validate")
            held_out = stratified_split(references["label_class"].to_numpy(), params.test_size,
                                        params.seed)
            n_clusters = int(scalar(con, "SELECT count(*) FROM model.gmm_components"))
            predictions = held_out_predictions(references, held_out, n_clusters=n_clusters,
                                               min_references=stored.min_references)
        ids = {"run_id": pl.lit(run.run_id), "classify_run_id": pl.lit(classify_run)}
        with run.stage("store"), transaction(con):
            write_table(con, "results.validation_split",
                         split_frame(references, held_out).with_columns(**ids))
            write_table(con, "results.validation_detections", predictions.with_columns(**ids))
            run_models(con, names=SQL_MODELS)
        metrics = con.sql("SELECT * FROM results.validation_metrics "
                          "ORDER BY level DESC, class_order").pl()
        kappa = con.sql("SELECT * FROM results.vote_kappa").pl().row(0, named=True)
        run.count("references", len(references))
        run.count("held_out", int(held_out.sum()))
        run.count("unclassifiable", int(predictions["pred_class"].null_count()))
    return ValidationResult(run, metrics, kappa)


def validation_text(result: ValidationResult) -> str:
    """Recall against chance per aggregated class and group, and the votes' kappa."""
    lines = ["held-out recall (chance = the class's predicted share; precision):"]
    for level in ("aggregated", "group", "class"):
        lines.append(f"  {level}:")
        for row in result.metrics.filter(pl.col("level") == level).iter_rows(named=True):
            recall = "n/a" if row["recall"] is None else f"{row['recall']:6.1%}"
            precision = "n/a" if row["precision"] is None else f"{row['precision']:6.1%}"
            lines.append(f"    {row['class']:<16} {recall}  chance {row['predicted_share']:6.1%}"
                         f"  precision {precision}  (held out {row['support']:,}, "
                         f"train {row['n_train']:,})")
    k = result.kappa
    kappa = "n/a" if k["kappa"] is None else f"{k['kappa']:.3f}"
    lines.append(f"Cohen's kappa, hard vs soft vote over {k['n_sources']:,} sources: {kappa} "
                 f"(observed agreement {k['observed_agreement']:.1%})")
    return "\n".join(lines)
