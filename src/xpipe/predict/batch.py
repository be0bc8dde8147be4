"""`xpipe classify`: SQL models, clustering, the kernel and the votes, as one atomic job.

Everything happens inside one transaction: a failure at any step leaves the warehouse as it was.
Rows move between DuckDB and NumPy in chunks of `chunk_rows` (Arrow → Polars → NumPy), so
memory is bounded by the chunk size, not by the catalogue.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import duckdb
import numpy as np
import polars as pl

from xpipe.core.config import Settings
from xpipe.core.progress import progress_bar
from xpipe.method.anomaly import ANOMALY_COLUMNS, anomaly_frame
from xpipe.method.kernel import MahalanobisSoftmin, softmin
from xpipe.method.mixture import MixtureParams, assign_clusters, fit_mixture
from xpipe.models import frozen
from xpipe.warehouse.connection import first_row, insert_frame, require_tables, scalar, transaction
from xpipe.warehouse.provenance import RunRecorder, recorded_run
from xpipe.warehouse.seeds import class_names, feature_names
from xpipe.warehouse.sql_models import (
    discover_models,
    load_macros,
    run_checks,
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

    def sql_variables(self) -> dict[str, object]:
        return {"min_flux_significance_b": self.min_flux_significance_b,
                "require_spectral_fits": self.require_spectral_fits}


def chunk_bounds(con: duckdb.DuckDBPyConnection, relation: str, chunk_rows: int
                 ) -> list[tuple[int, int]]:
    """[first, last] det_id of consecutive chunks of `relation` (ordered by det_id)."""
    rows = con.execute(
        f"SELECT min(det_id), max(det_id) FROM (SELECT det_id, (row_number() OVER "
        f"(ORDER BY det_id) - 1) // {int(chunk_rows)} AS chunk FROM {relation}) "
        f"GROUP BY chunk ORDER BY chunk"
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def iter_chunks(con: duckdb.DuckDBPyConnection, query: str, relation: str, chunk_rows: int,
                desc: str) -> Iterator[pl.DataFrame]:
    """Yield `query` chunk by chunk; it must select every row of `relation` whose det_id is in
    [`{lo}`, `{hi}`], so a chunk's height is the progress it makes."""
    bounds = chunk_bounds(con, relation, chunk_rows)
    total = scalar(con, f"SELECT count(*) FROM {relation}")
    with progress_bar(desc, total=total) as bar:
        for lo, hi in bounds:
            frame = con.sql(query.format(lo=lo, hi=hi)).pl()
            yield frame
            bar.update(frame.height)


def _features(frame: pl.DataFrame) -> np.ndarray:
    return frame.select(feature_names()).to_numpy().astype(np.float64, copy=False)


def require_clean_detections(con: duckdb.DuckDBPyConnection, params: ClassifyParams) -> None:
    """Stop with the selection's numbers when too few detections are left to cluster."""
    total = scalar(con, "SELECT count(*) FROM model.stg_detections")
    selected, clean = first_row(con, "SELECT count(*), count(*) FILTER (WHERE is_clean) "
                                     "FROM model.detection_features")
    if clean < max(params.n_components, 2):
        raise RuntimeError(
            f"only {clean} cleaned detections ({selected} of {total} pass the selection "
            f"flux_significance_b > {params.min_flux_significance_b}, spectral fits required: "
            f"{params.require_spectral_fits}; cleaning drops those missing any of the 12 "
            f"features): too few for a {params.n_components}-component mixture")


def fit_sample_query(params: ClassifyParams, n_clean: int, columns: str) -> str:
    """The rows the mixture is fitted on: every cleaned detection, or above `fit_sample_size` a
    seeded sample that does not depend on ingest order (`xpipe bic`/`stability` reuse it)."""
    if params.fit_sample_size is None or n_clean <= params.fit_sample_size:
        return f"SELECT {columns} FROM model.scaled_features ORDER BY det_id"
    return (f"SELECT {columns} FROM model.scaled_features ORDER BY hash(det_id, "
            f"{int(params.random_state)}), det_id LIMIT {int(params.fit_sample_size)}")


def fit_clusters(con: duckdb.DuckDBPyConnection, params: ClassifyParams, run_id: str
                 ) -> MixtureParams:
    """Fit on all cleaned detections, or a seeded, ingest-order-independent sample of them."""
    cols = ", ".join(f'"{f}"' for f in feature_names())
    n_clean = int(scalar(con, "SELECT count(*) FROM model.scaled_features"))
    query = fit_sample_query(params, n_clean, cols)
    mixture = fit_mixture(_features(con.sql(query).pl()), params.n_components,
                          params.random_state)
    con.execute("CREATE OR REPLACE TABLE model.gmm_components (run_id VARCHAR, component INTEGER, "
                "weight DOUBLE, mean DOUBLE[], covariance DOUBLE[])")
    insert_frame(con, "model.gmm_components", pl.DataFrame({
        "run_id": [run_id] * mixture.n_components,
        "component": np.arange(mixture.n_components, dtype=np.int32),
        "weight": mixture.weights,
        "mean": [m.tolist() for m in mixture.means],
        "covariance": [c.ravel().tolist() for c in mixture.covariances],
    }))
    return mixture


def read_mixture(con: duckdb.DuckDBPyConnection) -> MixtureParams:
    frame = con.sql("SELECT weight, mean, covariance FROM model.gmm_components "
                    "ORDER BY component").pl()
    f = len(feature_names())
    return MixtureParams(
        weights=frame["weight"].to_numpy(),
        means=np.array(frame["mean"].to_list(), dtype=np.float64),
        covariances=np.array(frame["covariance"].to_list(), dtype=np.float64).reshape(-1, f, f),
    )


def assign_all(con: duckdb.DuckDBPyConnection, mixture: MixtureParams, chunk_rows: int) -> None:
    cols = ", ".join(f'"{f}"' for f in feature_names())
    con.execute("CREATE OR REPLACE TABLE model.detection_cluster (det_id BIGINT, cluster INTEGER)")
    query = (f"SELECT det_id, {cols} FROM model.scaled_features "
             "WHERE det_id BETWEEN {lo} AND {hi} ORDER BY det_id")
    for frame in iter_chunks(con, query, "model.scaled_features", chunk_rows, "assign clusters"):
        labels = assign_clusters(_features(frame), mixture).astype(np.int32)
        insert_frame(con, "model.detection_cluster",
                pl.DataFrame({"det_id": frame["det_id"], "cluster": labels}))


def fit_references(con: duckdb.DuckDBPyConnection, params: ClassifyParams, n_clusters: int,
                   chunk_rows: int) -> MahalanobisSoftmin:
    classes = class_names()
    kernel = MahalanobisSoftmin(n_clusters, len(classes), len(feature_names()),
                                params.min_references)
    cols = ", ".join(f's."{f}"' for f in feature_names())
    con.execute("CREATE OR REPLACE TEMP VIEW __references AS SELECT r.det_id, r.label_class, "
                f"c.cluster, {cols} FROM model.detection_roles AS r "
                "JOIN model.detection_cluster AS c USING (det_id) "
                "JOIN model.scaled_features AS s USING (det_id) WHERE r.role = 'reference'")
    query = "SELECT * FROM __references WHERE det_id BETWEEN {lo} AND {hi}"
    codes = {name: i for i, name in enumerate(classes)}
    kernel.fit(np.empty((0, len(feature_names()))), np.empty(0, int), np.empty(0, int))
    for frame in iter_chunks(con, query, "__references", chunk_rows, "reference statistics"):
        y = frame["label_class"].replace_strict(codes, return_dtype=pl.Int64).to_numpy()
        kernel.partial_fit(_features(frame), y, frame["cluster"].to_numpy())
    rows = []
    for c in range(n_clusters):
        for k, name in enumerate(classes):
            usable = bool(kernel.usable_[c, k])
            rows.append({
                "cluster": c, "class": name, "n_references": int(kernel.counts_[c, k]),
                "usable": usable,
                "mean": kernel.means_[c, k].tolist() if usable else None,
                "pinv": kernel.pinv_[c, k].ravel().tolist() if usable else None,
            })
    con.execute("CREATE OR REPLACE TABLE model.reference_stats (cluster INTEGER, class VARCHAR, "
                "n_references BIGINT, usable BOOLEAN, mean DOUBLE[], pinv DOUBLE[])")
    insert_frame(con, "model.reference_stats", pl.DataFrame(rows, schema={
        "cluster": pl.Int32, "class": pl.Utf8, "n_references": pl.Int64, "usable": pl.Boolean,
        "mean": pl.List(pl.Float64), "pinv": pl.List(pl.Float64)}))
    return kernel


def probability_frame(frame: pl.DataFrame, proba: np.ndarray) -> pl.DataFrame:
    """The results.detection_class rows for a chunk: probabilities, then the argmax class."""
    classes = class_names()
    classified = ~np.isnan(proba).any(axis=1)
    codes = np.argmax(np.where(classified[:, None], proba, -1.0), axis=1)
    pred = np.array(classes, dtype=object)[codes]
    pred[~classified] = None
    columns = {name: pl.Series(name, proba[:, k], nan_to_null=True)
               for k, name in enumerate(classes)}
    return frame.select("det_id", "name", "obsid", "ra", "dec", "cluster").with_columns(
        **columns, pred_class=pl.Series("pred_class", pred.tolist(), dtype=pl.Utf8))


def create_detection_class(con: duckdb.DuckDBPyConnection, anomaly: bool = False) -> None:
    """The table; `anomaly` appends the anomaly columns (after pred_class, so readers that
    select by position the published layout are unaffected)."""
    probs = ", ".join(f'"{c}" DOUBLE' for c in class_names())
    extra = "".join(f", {name} {kind}" for name, kind in ANOMALY_COLUMNS.items()) if anomaly \
        else ""
    con.execute("CREATE OR REPLACE TABLE results.detection_class (det_id BIGINT, name VARCHAR, "
                f"obsid INTEGER, ra DOUBLE, dec DOUBLE, cluster INTEGER, {probs}, "
                f"pred_class VARCHAR{extra})")


def classify_targets(con: duckdb.DuckDBPyConnection, kernel: MahalanobisSoftmin,
                     chunk_rows: int, mixture: MixtureParams | None = None) -> None:
    """Probabilities of every target; with `mixture`, also its anomaly scores."""
    create_detection_class(con, anomaly=mixture is not None)
    cols = ", ".join(f's."{f}"' for f in feature_names())
    con.execute("CREATE OR REPLACE TEMP VIEW __targets AS SELECT r.det_id, f.name, f.obsid, "
                f"f.ra, f.dec, c.cluster, {cols} FROM model.detection_roles AS r "
                "JOIN model.detection_cluster AS c USING (det_id) "
                "JOIN model.scaled_features AS s USING (det_id) "
                "JOIN model.detection_features AS f USING (det_id) WHERE r.role = 'target'")
    query = "SELECT * FROM __targets WHERE det_id BETWEEN {lo} AND {hi} ORDER BY det_id"
    for frame in iter_chunks(con, query, "__targets", chunk_rows, "classify targets"):
        x = _features(frame)
        distances = kernel.distances(x, frame["cluster"].to_numpy())
        rows = probability_frame(frame, softmin(distances))
        if mixture is not None:
            rows = pl.concat([rows, anomaly_frame(x, distances, mixture, class_names())],
                             how="horizontal")
        insert_frame(con, "results.detection_class", rows)


def store_model_version(con: duckdb.DuckDBPyConnection, run_id: str, params: ClassifyParams,
                        mixture: MixtureParams, kernel: MahalanobisSoftmin) -> frozen.FrozenModel:
    """Freeze what this run fitted as an immutable model version (`xpipe models`), so new
    detections can be classified later exactly as this run classified its own."""
    scaling = [frozen.FeatureScaling(**row) for row in con.sql(
        "SELECT feature, position, transform, min_nonzero, log_offset, min_value, max_value "
        "FROM model.preprocessing_params ORDER BY position").pl().iter_rows(named=True)]
    cleaned, references = first_row(con, "SELECT (SELECT count(*) FROM model.scaled_features), "
                                         "(SELECT count(*) FROM model.detection_roles "
                                         "WHERE role = 'reference')")
    method = {"n_components": params.n_components, "random_state": params.random_state,
              "fit_sample_size": params.fit_sample_size,
              "min_references": params.min_references}
    model = frozen.from_fit(run_id, params.sql_variables(), method, scaling, mixture, kernel,
                            class_names(), feature_names(),
                            counts={"cleaned": int(cleaned), "references": int(references)})
    frozen.store(con, model, origin="classify")
    return model


def check_python_model(con: duckdb.DuckDBPyConnection, name: str) -> None:
    run_checks(con, discover_models()[name])


def stage_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows at each stage: pulled → selected → cleaned → labeled → classified → sources."""
    one = first_row(con, """
        SELECT
            (SELECT count(*) FROM model.stg_detections),
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
    keys = ["detections", "selected", "cleaned", "references", "targets", "excluded",
            "classified", "unclassifiable", "sources", "uniquely_classified", "ambiguous"]
    return dict(zip(keys, (int(v) for v in one), strict=True))


def classify(con: duckdb.DuckDBPyConnection, settings: Settings, params: ClassifyParams
             ) -> tuple[RunRecorder, dict[str, int]]:
    require_tables(con, ["raw.detections", "raw.simbad_match"],
                   "load a catalogue first with `xpipe warehouse`")
    with recorded_run(con, "classify", asdict(params)) as run, transaction(con):
        load_macros(con)
        set_parameters(con, {**params.sql_variables(), "run_id": run.run_id})
        with run.stage("sql_models"):
            run_models(con, ["seeds", "staging"], names=["model.detection_features"])
            require_clean_detections(con, params)
            run_models(con, ["features", "labels"], exclude=["model.detection_features"])
        with run.stage("fit_mixture"):
            mixture = fit_clusters(con, params, run.run_id)
            check_python_model(con, "model.gmm_components")
        with run.stage("assign_clusters"):
            assign_all(con, mixture, settings.chunk_rows)
            check_python_model(con, "model.detection_cluster")
        with run.stage("reference_stats"):
            kernel = fit_references(con, params, mixture.n_components, settings.chunk_rows)
            check_python_model(con, "model.reference_stats")
        with run.stage("model_version"):
            store_model_version(con, run.run_id, params, mixture, kernel)
        with run.stage("kernel"):
            classify_targets(con, kernel, settings.chunk_rows, mixture)
            check_python_model(con, "results.detection_class")
        with run.stage("votes"):
            run_models(con, ["votes"])
            run_models(con, names=["results.source_anomaly"])
        counts = stage_counts(con)
        for key, value in counts.items():
            run.count(key, value)
    return run, counts
