"""`xpipe classify`: SQL models, clustering, the kernel and the votes, as one atomic job.

Everything happens inside one transaction: a failure at any step leaves the warehouse as it was.
Rows move between DuckDB and NumPy in chunks of `chunk_rows` (Arrow → Polars → NumPy), so
memory is bounded by the chunk size, not by the catalogue.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import polars as pl

from xpipe.core.config import Settings
from xpipe.core.errors import ModelCheckError, TooFewRowsError
from xpipe.method.kernel import MahalanobisSoftmin
from xpipe.method.mixture import MixtureParams, NotConvergedError, fit_mixture
from xpipe.models import frozen, store
from xpipe.models.frozen import selection_variables
from xpipe.predict.scoring import (
    assign_chunks,
    cleaned_rows,
    create_detection_class,
    fit_reference_stats,
    fit_sample,
    insert_detection_class,
    score_chunk,
)
from xpipe.warehouse.connection import (
    insert_frame,
    only_row,
    require_tables,
    scalar,
    transaction,
)
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.provenance import RunRecorder, recorded_run
from xpipe.warehouse.seeds import class_names, feature_names
from xpipe.warehouse.sql_models import (
    check_written,
    load_macros,
    run_models,
    set_parameters,
)


@dataclass(frozen=True)
class ClassifyParams:
    """The method's choices; defaults are the paper's."""

    min_flux_significance_b: float | None = 5.0  # None: no significance cut
    require_spectral_fits: bool = True
    n_components: int = 6
    random_state: int = 42
    fit_sample_size: int | None = 100_000  # bench/results/clustering_sample_size.json
    min_references: int = 12
    match_type: str | None = None  # None: no selection on master_stack_assoc.match_type

    def sql_variables(self) -> dict[str, object]:
        """The selection, as recorded in a frozen model: `match_type` only when it is used,
        so a model fitted without it is what it was before the option existed."""
        selection: dict[str, object] = {
            "min_flux_significance_b": self.min_flux_significance_b,
            "require_spectral_fits": self.require_spectral_fits}
        if self.match_type is not None:
            selection["match_type"] = self.match_type
        return selection

    def recorded(self) -> dict[str, object]:
        """The run's parameters for meta.runs (`match_type` only when it is used)."""
        values = asdict(self)
        if self.match_type is None:
            del values["match_type"]
        return values


def require_clean_detections(con: duckdb.DuckDBPyConnection, params: ClassifyParams) -> None:
    """Stop with the selection's numbers when too few detections are left to cluster."""
    total = scalar(con, "SELECT count(*) FROM model.stg_detections")
    selected, clean = only_row(con, "SELECT count(*), count(*) FILTER (WHERE is_clean) "
                                     "FROM model.detection_features")
    if clean < max(params.n_components, 2):
        raise TooFewRowsError(
            f"only {clean} cleaned detections ({selected} of {total} pass the selection "
            f"flux_significance_b > {params.min_flux_significance_b}, spectral fits required: "
            f"{params.require_spectral_fits}; cleaning drops those missing any of the 12 "
            f"features): too few for a {params.n_components}-component mixture")


def fit_clusters(con: duckdb.DuckDBPyConnection, params: ClassifyParams, run_id: str
                 ) -> MixtureParams:
    """Fit on all cleaned detections, or a seeded, ingest-order-independent sample of them."""
    x = fit_sample(con, sample_size=params.fit_sample_size, random_state=params.random_state)
    try:
        mixture = fit_mixture(x, params.n_components, params.random_state)
    except NotConvergedError as exc:
        raise ModelCheckError(str(exc)) from exc
    create_table(con, "model.gmm_components", replace=True)
    insert_frame(con, "model.gmm_components",
                 store.component_frame(mixture).with_columns(run_id=pl.lit(run_id)))
    return mixture


def assign_all(con: duckdb.DuckDBPyConnection, mixture: MixtureParams, chunk_rows: int) -> None:
    create_table(con, "model.detection_cluster", replace=True)
    for frame, labels in assign_chunks(con, mixture, chunk_rows=chunk_rows,
                                       desc="assign clusters"):
        insert_frame(con, "model.detection_cluster",
                     pl.DataFrame({"det_id": frame["det_id"], "cluster": labels.astype(np.int32)}))


def fit_references(con: duckdb.DuckDBPyConnection, params: ClassifyParams, *, n_clusters: int,
                   chunk_rows: int) -> MahalanobisSoftmin:
    references = cleaned_rows(con, role="reference", chunk_rows=chunk_rows,
                              desc="reference statistics")
    kernel = fit_reference_stats(references, n_clusters=n_clusters,
                                 min_references=params.min_references)
    create_table(con, "model.reference_stats", replace=True)
    insert_frame(con, "model.reference_stats", store.reference_frame(
        kernel.counts_, kernel.means_, kernel.pinv_, usable=kernel.usable_,
        classes=class_names()))
    return kernel


def classify_targets(con: duckdb.DuckDBPyConnection, kernel: MahalanobisSoftmin, *,
                     mixture: MixtureParams, chunk_rows: int) -> None:
    """Probabilities and anomaly scores of every target."""
    create_detection_class(con)
    for frame in cleaned_rows(con, role="target", chunk_rows=chunk_rows,
                              desc="classify targets"):
        rows = score_chunk(frame.drop("role", "label_class"), kernel=kernel, mixture=mixture,
                           anomaly=True)
        insert_detection_class(con, rows)


def store_model_version(con: duckdb.DuckDBPyConnection, run_id: str, *, params: ClassifyParams,
                        mixture: MixtureParams, kernel: MahalanobisSoftmin) -> frozen.FrozenModel:
    """Freeze what this run fitted as an immutable model version (`xpipe models`), so new
    detections can be classified later exactly as this run classified its own."""
    scaling = [frozen.FeatureScaling(**row) for row in con.sql(
        "SELECT feature, position, transform, min_nonzero, log_offset, min_value, max_value "
        "FROM model.preprocessing_params ORDER BY position").pl().iter_rows(named=True)]
    cleaned, references = only_row(con, "SELECT (SELECT count(*) FROM model.scaled_features), "
                                         "(SELECT count(*) FROM model.detection_roles "
                                         "WHERE role = 'reference')")
    method = {"n_components": params.n_components, "random_state": params.random_state,
              "fit_sample_size": params.fit_sample_size,
              "min_references": params.min_references}
    model = frozen.from_fit(run_id, selection=params.sql_variables(), params=method,
                            scaling=scaling, mixture=mixture, kernel=kernel,
                            classes=class_names(), features=feature_names(),
                            counts={"cleaned": int(cleaned), "references": int(references)})
    store.store(con, model, origin="classify")
    return model


def stage_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows at each stage: pulled → excluded for an impossible value → selected → cleaned →
    labeled → classified → sources. A warehouse classified before model.excluded_detections
    existed counts no exclusions."""
    has_exclusions = bool(scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = "
                                      "'model' AND table_name = 'excluded_detections'"))
    impossible = ("(SELECT count(*) FROM model.excluded_detections)" if has_exclusions
                  else "0")
    one = only_row(con, f"""
        SELECT
            (SELECT count(*) FROM model.stg_detections),
            {impossible},
            (SELECT count(*) FROM model.detection_features),
            (SELECT count(*) FROM model.detection_features WHERE is_clean),
            (SELECT count(*) FROM model.detection_roles WHERE role = 'reference'),
            (SELECT count(*) FROM model.detection_roles WHERE role = 'target'),
            (SELECT count(*) FROM model.detection_roles WHERE role = 'excluded'),
            (SELECT count(*) FROM results.detection_class WHERE pred_class IS NOT NULL),
            (SELECT count(*) FROM results.detection_class WHERE pred_class IS NULL),
            (SELECT count(*) FROM results.source_class),
            (SELECT count(*) FROM results.source_class WHERE is_unique),
            (SELECT count(*) FROM results.source_class WHERE NOT is_unique)
    """)
    keys = ["detections", "impossible_values", "selected", "cleaned", "references", "targets",
            "excluded", "classified", "unclassifiable", "sources", "uniquely_classified",
            "ambiguous"]
    return dict(zip(keys, (int(v) for v in one), strict=True))


def master_class_counts(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int]]:
    """(aggregated class, master class, sources) of the uniquely classified sources, by
    aggregated class and then most sources first."""
    return [(str(agg), str(fine), int(n)) for agg, fine, n in con.execute(
        "SELECT agg_master_class, master_class, count(*) FROM results.source_class "
        "WHERE is_unique GROUP BY ALL ORDER BY agg_master_class, count(*) DESC, master_class"
    ).fetchall()]


def classify(con: duckdb.DuckDBPyConnection, settings: Settings, params: ClassifyParams
             ) -> tuple[RunRecorder, dict[str, int]]:
    require_tables(con, ["raw.detections", "raw.simbad_match"],
                   "load a catalogue first with `xpipe warehouse`")
    with recorded_run(con, "classify", params.recorded()) as run, transaction(con):
        load_macros(con)
        set_parameters(con, {**selection_variables(params.sql_variables()),
                             "run_id": run.run_id})
        with run.stage("sql_models"):
            run_models(con, ["seeds", "staging"], names=["model.detection_features"])
            require_clean_detections(con, params)
            run_models(con, ["features", "labels"], exclude=["model.detection_features"])
        with run.stage("fit_mixture"):
            mixture = fit_clusters(con, params, run.run_id)
            check_written(con, "model.gmm_components")
        with run.stage("assign_clusters"):
            assign_all(con, mixture, settings.chunk_rows)
            check_written(con, "model.detection_cluster")
        with run.stage("reference_stats"):
            kernel = fit_references(con, params, n_clusters=mixture.n_components,
                                    chunk_rows=settings.chunk_rows)
            check_written(con, "model.reference_stats")
        with run.stage("model_version"):
            store_model_version(con, run.run_id, params=params, mixture=mixture, kernel=kernel)
        with run.stage("kernel"):
            classify_targets(con, kernel, mixture=mixture, chunk_rows=settings.chunk_rows)
            check_written(con, "results.detection_class")
        with run.stage("votes"):
            run_models(con, ["votes"])  # the votes (scoring.VOTE_MODELS) and published layouts
            run_models(con, names=["results.source_anomaly"])
        counts = stage_counts(con)
        for key, value in counts.items():
            run.count(key, value)
    return run, counts
