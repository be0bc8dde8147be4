"""The scoring core: reading cleaned rows in chunks, fitting the reference statistics from
chunks, scoring a chunk (cluster → distances → probabilities → anomaly columns) and voting in
memory.

`classify`, `classify-new` and the Python API, `validate`, `stability` and `vote` all call these
functions and re-implement none of them, so a detection is scored the same way everywhere. Rows
move between DuckDB and NumPy in chunks (Arrow → Polars → NumPy): memory is bounded by the
chunk size, not by the catalogue.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import duckdb
import numpy as np
import polars as pl
from numpy.typing import NDArray

from xpipe.core.config import Settings
from xpipe.core.progress import progress_bar
from xpipe.method.anomaly import anomaly_frame
from xpipe.method.kernel import MahalanobisSoftmin, predicted_codes, softmin
from xpipe.method.mixture import MixtureParams, assign_clusters
from xpipe.warehouse.connection import connect_memory, insert_frame, scalar
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.seeds import class_names, feature_names
from xpipe.warehouse.sql_models import load_macros, run_models

F64 = NDArray[np.float64]

ROWS_VIEW = "__cleaned_rows"
_VIEW_IDS = itertools.count()
VOTE_MODELS = ["results.source_class_probs", "results.source_class"]


def feature_select(prefix: str = "") -> str:
    """The 12 feature columns, in seed order, for a SELECT list."""
    return ", ".join(f'{prefix}"{f}"' for f in feature_names())


def feature_matrix(frame: pl.DataFrame, columns: Iterable[str] | None = None) -> F64:
    """The features of `frame` as a float64 (n, 12) array, in seed order."""
    selected = list(columns) if columns is not None else list(feature_names())
    return frame.select(selected).to_numpy().astype(np.float64, copy=False)


def class_codes(labels: pl.Series) -> NDArray[np.int64]:
    """0-based codes of class names, in the seed's (published) order."""
    codes = {name: i for i, name in enumerate(class_names())}
    return labels.replace_strict(codes, return_dtype=pl.Int64).to_numpy()


def chunk_bounds(con: duckdb.DuckDBPyConnection, relation: str, chunk_rows: int
                 ) -> list[tuple[int, int]]:
    """[first, last] det_id of consecutive chunks of `relation` (ordered by det_id)."""
    rows = con.execute(
        f"SELECT min(det_id), max(det_id) FROM (SELECT det_id, (row_number() OVER "
        f"(ORDER BY det_id) - 1) // {int(chunk_rows)} AS chunk FROM {relation}) "
        f"GROUP BY chunk ORDER BY chunk"
    ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def iter_chunks(con: duckdb.DuckDBPyConnection, query: str, relation: str, *,
                chunk_rows: int, desc: str) -> Iterator[pl.DataFrame]:
    """Yield `query` chunk by chunk; it must select every row of `relation` whose det_id is in
    [`{lo}`, `{hi}`], so a chunk's height is the progress it makes."""
    bounds = chunk_bounds(con, relation, chunk_rows)
    total = int(scalar(con, f"SELECT count(*) FROM {relation}"))
    with progress_bar(desc, total=total) as bar:
        for lo, hi in bounds:
            frame = con.sql(query.format(lo=lo, hi=hi)).pl()
            yield frame
            bar.update(frame.height)


def cleaned_rows(con: duckdb.DuckDBPyConnection, *, role: str | None, chunk_rows: int,
                 desc: str, stored_clusters: bool = True) -> Iterator[pl.DataFrame]:
    """Chunks of cleaned detections in det_id order: det_id, name, obsid, ra, dec, role,
    label_class, the stored cluster (unless `stored_clusters` is False) and the 12 scaled
    features; `role` keeps only references or targets (None: every cleaned detection)."""
    cluster_join = ("JOIN model.detection_cluster AS c USING (det_id) "
                    if stored_clusters else "")
    cluster_col = "c.cluster, " if stored_clusters else ""
    where = "TRUE" if role is None else f"r.role = '{role}'"
    view = f"{ROWS_VIEW}_{next(_VIEW_IDS)}"  # its own view: two readers may be open at once
    con.execute(f"CREATE TEMP VIEW {view} AS SELECT s.det_id, f.name, f.obsid, "
                f"f.ra, f.dec, r.role, r.label_class, {cluster_col}{feature_select('s.')} "
                "FROM model.scaled_features AS s JOIN model.detection_roles AS r USING (det_id) "
                f"{cluster_join}JOIN model.detection_features AS f USING (det_id) "
                f"WHERE {where}")
    query = f"SELECT * FROM {view} WHERE det_id BETWEEN {{lo}} AND {{hi}} ORDER BY det_id"
    try:
        yield from iter_chunks(con, query, view, chunk_rows=chunk_rows, desc=desc)
    finally:  # after a failure the transaction may be aborted: the view then goes with it
        with contextlib.suppress(duckdb.Error):
            con.execute(f"DROP VIEW IF EXISTS {view}")


def fit_sample(con: duckdb.DuckDBPyConnection, *, sample_size: int | None,
               random_state: int) -> F64:
    """The scaled features the mixture is fitted on: every cleaned detection, or above
    `sample_size` a seeded sample that does not depend on ingest order (classify, bic and
    stability all fit on this)."""
    n_clean = int(scalar(con, "SELECT count(*) FROM model.scaled_features"))
    order = "det_id"
    if sample_size is not None and n_clean > sample_size:
        order = f"hash(det_id, {int(random_state)}), det_id LIMIT {int(sample_size)}"
    return feature_matrix(con.sql(f"SELECT {feature_select()} FROM model.scaled_features "
                                  f"ORDER BY {order}").pl())


def assign_chunks(con: duckdb.DuckDBPyConnection, mixture: MixtureParams, *, chunk_rows: int,
                  desc: str) -> Iterator[tuple[pl.DataFrame, NDArray[np.int64]]]:
    """Every cleaned detection, chunk by chunk (det_id order), with its cluster under
    `mixture`."""
    for frame in cleaned_rows(con, role=None, chunk_rows=chunk_rows, desc=desc,
                              stored_clusters=False):
        yield frame, assign_clusters(feature_matrix(frame), mixture)


# References per update of one (cluster, class) group's moments. Every group is updated with
# its rows in det_id order, REFERENCE_BLOCK_ROWS at a time and then the rest, whatever chunks
# they arrive in, so the statistics (and every probability) are the same bits for any
# chunk_rows. Memory: at most REFERENCE_BLOCK_ROWS - 1 pending rows per group, 12 doubles each
# (6 clusters × 10 classes × 8,191 × 96 bytes ≈ 47 MB at most, and never more than the
# references themselves).
REFERENCE_BLOCK_ROWS = 8192


def fit_reference_stats(chunks: Iterable[pl.DataFrame], *, n_clusters: int,
                        min_references: int) -> MahalanobisSoftmin:
    """The kernel fitted on chunks of references (label_class, cluster, the 12 features) in
    det_id order; the result does not depend on how the rows are cut into chunks."""
    kernel = MahalanobisSoftmin(min_references)
    n_classes = len(class_names())
    shapes = {"n_clusters": n_clusters, "n_classes": n_classes}
    pending: dict[int, list[F64]] = {}  # group key (cluster × n_classes + class) → rows

    def update(key: int, x: F64) -> None:
        cluster, code = divmod(key, n_classes)
        kernel.partial_fit(x, np.full(len(x), code, np.int64), np.full(len(x), cluster, np.int64),
                           **shapes)

    for frame in chunks:
        x = feature_matrix(frame)
        keys = (frame["cluster"].to_numpy().astype(np.int64) * n_classes
                + class_codes(frame["label_class"]))
        for key in np.unique(keys):
            rows = pending.setdefault(int(key), [])
            rows.append(x[keys == key])
            if sum(len(r) for r in rows) >= REFERENCE_BLOCK_ROWS:
                group = np.concatenate(rows)
                full = len(group) - len(group) % REFERENCE_BLOCK_ROWS
                for start in range(0, full, REFERENCE_BLOCK_ROWS):
                    update(int(key), group[start:start + REFERENCE_BLOCK_ROWS])
                pending[int(key)] = [group[full:]]
    for key in sorted(pending):
        rest = np.concatenate(pending[key])
        if len(rest):
            update(key, rest)
    if not hasattr(kernel, "counts_"):  # no reference at all: every class unusable
        kernel.partial_fit(np.empty((0, len(feature_names()))), np.empty(0, np.int64),
                           np.empty(0, np.int64), **shapes)
    return kernel


def probability_frame(frame: pl.DataFrame, proba: F64) -> pl.DataFrame:
    """The results.detection_class rows for a chunk: probabilities, then the argmax class."""
    classes = class_names()
    codes = predicted_codes(proba)
    pred = np.array([*classes, None], dtype=object)[codes]  # code -1 picks the None
    columns = {name: pl.Series(name, proba[:, k], nan_to_null=True)
               for k, name in enumerate(classes)}
    return frame.select("det_id", "name", "obsid", "ra", "dec", "cluster").with_columns(
        **columns, pred_class=pl.Series("pred_class", pred.tolist(), dtype=pl.Utf8))


def score_chunk(frame: pl.DataFrame, *, kernel: MahalanobisSoftmin,
                mixture: MixtureParams | None = None, features: Iterable[str] | None = None,
                anomaly: bool = False) -> pl.DataFrame:
    """results.detection_class rows of one chunk: its cluster (the frame's `cluster` column, or
    assigned by `mixture`), distances, probabilities and, with `anomaly`, the anomaly columns.

    `frame` holds det_id, name, obsid, ra, dec and the scaled features (`features` names their
    columns when they are not the plain feature names). A row's result does not depend on the
    other rows of the chunk.
    """
    x = feature_matrix(frame, features)
    if "cluster" not in frame.columns:
        if mixture is None:
            raise ValueError("score_chunk needs a cluster column or the mixture to assign one")
        frame = frame.with_columns(cluster=pl.Series(assign_clusters(x, mixture)
                                                     .astype(np.int32)))
    distances = kernel.distances(x, frame["cluster"].to_numpy())
    rows = probability_frame(frame, softmin(distances))
    if not anomaly:
        return rows
    if mixture is None:
        raise ValueError("anomaly scores need the mixture")
    return pl.concat([rows, anomaly_frame(x, distances, mixture, class_names())],
                     how="horizontal")


def score_array(x: F64, *, kernel: MahalanobisSoftmin, mixture: MixtureParams
                ) -> tuple[NDArray[np.int64], F64]:
    """Clusters and class probabilities of scaled feature rows without a frame around them
    (the Monte Carlo draws): the steps of score_chunk, row by row the same numbers."""
    clusters = assign_clusters(x, mixture)
    return clusters, softmin(kernel.distances(x, clusters), kernel.n_jobs)


def create_detection_class(con: duckdb.DuckDBPyConnection) -> None:
    """results.detection_class, empty (its contract: sql/classify/detection_class.yml)."""
    create_table(con, "results.detection_class", replace=True)


def insert_detection_class(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame) -> None:
    """Append rows (any subset of the contract's columns) to results.detection_class."""
    insert_frame(con, "results.detection_class", rows)


def vote(con: duckdb.DuckDBPyConnection) -> None:
    """Hard and soft votes of every source (METHOD §7) from results.detection_class."""
    run_models(con, names=VOTE_MODELS)


@contextmanager
def voting_warehouse(settings: Settings | None = None
                     ) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory warehouse with the seeds and an empty results.detection_class, where the
    warehouse's own voting SQL runs on detections from elsewhere."""
    with connect_memory(settings) as con:
        load_macros(con)
        run_models(con, layers=["seeds"])
        create_detection_class(con)
        yield con


def vote_in_memory(detection_class: pl.DataFrame, settings: Settings | None = None
                   ) -> pl.DataFrame:
    """results.source_class for a per-detection table (nothing in the warehouse is touched)."""
    with voting_warehouse(settings) as con:
        if detection_class.height:
            insert_detection_class(con, detection_class)
        vote(con)
        return con.sql("SELECT * FROM results.source_class").pl()
