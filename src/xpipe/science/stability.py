"""`xpipe stability`: how much the classification depends on the clustering's seed and K.

Each alternative (other seeds at the stored K; K = 5 and 7 at the stored seed; and the stored
K and seed refitted, the control that measures numerical noise alone) reruns what `xpipe
classify` does after the SQL models — fit on the same sample rule, assign every cleaned
detection, reference statistics, kernel — in memory, and the same voting SQL in an in-memory
DuckDB. The stored results are never written; only the summary (results.stability) is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import cast

import duckdb
import numpy as np
import polars as pl
from numpy.typing import NDArray
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from xpipe.core.errors import InputError
from xpipe.core.progress import progress_bar
from xpipe.method.mixture import (
    MixtureParams,
    fit_gaussian_mixture,
    mixture_params,
)
from xpipe.predict.batch import ClassifyParams
from xpipe.predict.scoring import (
    assign_chunks,
    cleaned_rows,
    fit_reference_stats,
    score_chunk,
    vote_in_memory,
)
from xpipe.science.common import (
    classify_params,
    classify_run_id,
    fit_sample,
    require_classified,
)
from xpipe.warehouse.connection import transaction
from xpipe.warehouse.provenance import RunRecorder, recorded_run
from xpipe.warehouse.sql_models import write_table

UNCLASSIFIED = "unclassified"
AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class StabilityParams:
    seeds: tuple[int, ...] = ()  # empty: the three seeds after the stored one
    ks: tuple[int, ...] = (5, 7)
    control: bool = True  # also refit the stored K and seed


@dataclass(frozen=True)
class Alternative:
    label: str
    n_components: int
    random_state: int
    is_control: bool = False


def alternatives(stored: ClassifyParams, params: StabilityParams) -> list[Alternative]:
    """The clusterings to compare with the stored one, the control first."""
    seeds = params.seeds or tuple(stored.random_state + i for i in (1, 2, 3))
    out = []
    if params.control:
        out.append(Alternative(f"refit K={stored.n_components}, seed {stored.random_state}",
                               stored.n_components, stored.random_state, is_control=True))
    out += [Alternative(f"seed {s}", stored.n_components, s)
            for s in seeds if s != stored.random_state]
    out += [Alternative(f"K={k}", k, stored.random_state)
            for k in params.ks if k != stored.n_components]
    return out


def master_labels(source_class: pl.DataFrame) -> pl.DataFrame:
    """name → the fine and aggregated master class, 'ambiguous' where the votes disagree."""
    return source_class.select(
        "name",
        fine=pl.when(pl.col("is_unique")).then(pl.col("master_class")).otherwise(pl.lit(AMBIGUOUS)),
        agg=pl.when(pl.col("is_unique")).then(pl.col("agg_master_class"))
        .otherwise(pl.lit(AMBIGUOUS)),
    )


def mean_of(flags: pl.Series) -> float:
    """The fraction of true values of a non-empty boolean series."""
    return float(cast(float, flags.mean()))


def changed_fractions(stored: pl.DataFrame, alternative: pl.DataFrame) -> tuple[float, float]:
    """Fractions of the stored sources whose fine / aggregated master class differs in the
    alternative ('ambiguous' and 'unclassified' count as classes, so losing a class counts)."""
    if stored.is_empty():
        return 0.0, 0.0
    joined = master_labels(stored).join(master_labels(alternative), on="name", how="left",
                                        suffix="_alt").fill_null(UNCLASSIFIED)
    return (float(mean_of(joined["fine"] != joined["fine_alt"])),
            float(mean_of(joined["agg"] != joined["agg_alt"])))


def rerun_classification(con: duckdb.DuckDBPyConnection, mixture: MixtureParams, *,
                         min_references: int, chunk_rows: int
                         ) -> tuple[NDArray[np.int64], pl.DataFrame]:
    """Clusters of every cleaned detection (det_id order) and the detection_class rows the
    kernel gives the targets under this mixture: classify's steps, in two streamed passes."""
    clusters: list[NDArray[np.int64]] = []
    ids: list[pl.Series] = []

    def references() -> Iterator[pl.DataFrame]:
        for frame, labels in assign_chunks(con, mixture, chunk_rows=chunk_rows,
                                           desc="stability: clusters"):
            clusters.append(labels)
            ids.append(frame["det_id"])
            yield frame.with_columns(cluster=pl.Series(labels)).filter(
                pl.col("role") == "reference")

    kernel = fit_reference_stats(references(), n_clusters=mixture.n_components,
                                 min_references=min_references)
    all_clusters = np.concatenate(clusters) if clusters else np.empty(0, np.int64)
    by_id = pl.DataFrame({"det_id": pl.concat(ids) if ids else pl.Series([], dtype=pl.Int64),
                          "cluster": pl.Series(all_clusters, dtype=pl.Int32)})
    targets = [score_chunk(frame.drop("role", "label_class").join(by_id, on="det_id",
                                                                   maintain_order="left"),
                           kernel=kernel)
               for frame in cleaned_rows(con, role="target", chunk_rows=chunk_rows,
                                         desc="stability: targets", stored_clusters=False)]
    return all_clusters, pl.concat(targets) if targets else pl.DataFrame()


def stored_clusters(con: duckdb.DuckDBPyConnection) -> NDArray[np.int64]:
    return con.sql("SELECT c.cluster FROM model.scaled_features AS s "
                   "JOIN model.detection_cluster AS c USING (det_id) ORDER BY s.det_id"
                   ).pl()["cluster"].to_numpy()


def compare(con: duckdb.DuckDBPyConnection, stored: ClassifyParams, alt: Alternative, *,
            reference_clusters: NDArray[np.int64], stored_sources: pl.DataFrame,
            chunk_rows: int) -> dict[str, object]:
    """Refit one alternative and measure how far its clustering and master classes move."""
    params = replace(stored, n_components=alt.n_components, random_state=alt.random_state)
    with threadpool_limits(limits=1, user_api="blas"):
        gmm = fit_gaussian_mixture(fit_sample(con, params), alt.n_components, alt.random_state)
        mixture = mixture_params(gmm)
        clusters, detection_class = rerun_classification(
            con, mixture, min_references=stored.min_references, chunk_rows=chunk_rows)
    sources = vote_in_memory(detection_class)
    fine, agg = changed_fractions(stored_sources, sources)
    return {
        "alternative": alt.label, "n_components": alt.n_components,
        "random_state": alt.random_state, "is_control": alt.is_control,
        "converged": bool(gmm.converged_),
        "adjusted_rand_index": float(adjusted_rand_score(reference_clusters, clusters)),
        "n_detections": len(clusters), "n_sources": stored_sources.height,
        "fine_changed_fraction": fine, "agg_changed_fraction": agg,
        "unique_fraction": mean_of(sources["is_unique"]) if sources.height else 0.0,
    }


@dataclass(frozen=True)
class StabilityResult:
    run: RunRecorder
    table: pl.DataFrame  # results.stability


def run_stability(con: duckdb.DuckDBPyConnection, params: StabilityParams, chunk_rows: int
                  ) -> StabilityResult:
    require_classified(con)
    stored = classify_params(con)
    classify_run = classify_run_id(con)
    alts = alternatives(stored, params)
    if not alts:
        raise InputError("no alternative clustering to compare: give other --seeds or --k")
    with recorded_run(con, "stability", {**asdict(params), "classify_run_id": classify_run}
                      ) as run:
        reference_clusters = stored_clusters(con)
        stored_sources = con.sql("SELECT name, is_unique, master_class, agg_master_class "
                                 "FROM results.source_class").pl()
        rows = []
        with run.stage("refit"), progress_bar("stability refits", total=len(alts),
                                               unit="fits") as bar:
            for alt in alts:
                rows.append(compare(con, stored, alt, reference_clusters=reference_clusters,
                                    stored_sources=stored_sources, chunk_rows=chunk_rows))
                bar.update(1)
        table = pl.DataFrame(rows).with_columns(
            run_id=pl.lit(run.run_id), classify_run_id=pl.lit(classify_run),
            n_components=pl.col("n_components").cast(pl.Int32))
        with run.stage("store"), transaction(con):
            write_table(con, "results.stability", table)
        run.count("alternatives", len(rows))
    return StabilityResult(run, table)


def stability_text(table: pl.DataFrame) -> str:
    lines = [f"{'alternative':<24} {'ARI':>6} {'fine changed':>13} {'agg changed':>12}"]
    for row in table.iter_rows(named=True):
        note = "" if row["converged"] else "  (not converged)"
        lines.append(f"{row['alternative']:<24} {row['adjusted_rand_index']:>6.3f} "
                     f"{row['fine_changed_fraction']:>13.1%} {row['agg_changed_fraction']:>12.1%}"
                     f"{note}")
    return "\n".join(lines)
