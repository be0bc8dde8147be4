"""The version store: frozen models kept in the warehouse, append-only and hash-checked.

Every classify run stores one version (its id is the run id); tables are only ever appended to,
and the hash is checked whenever a version is read, so an altered version is refused rather
than used.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import polars as pl
from numpy.typing import NDArray

from xpipe.core.errors import WarehouseError
from xpipe.method.mixture import MixtureParams
from xpipe.models.frozen import FeatureScaling, FrozenModel
from xpipe.warehouse.connection import first_row, insert_frame, only_row, table_exists
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.dtypes import polars_schema
from xpipe.warehouse.sql_models import check_written

F64 = NDArray[np.float64]

VERSION_TABLES = ("model.versions", "model.version_scaling", "model.version_components",
                  "model.version_reference_stats")



def component_frame(mixture: MixtureParams) -> pl.DataFrame:
    """One row per mixture component (model.gmm_components, model.version_components)."""
    return pl.DataFrame({
        "component": np.arange(mixture.n_components, dtype=np.int32),
        "weight": mixture.weights,
        "mean": [m.tolist() for m in mixture.means],
        "covariance": [c.ravel().tolist() for c in mixture.covariances]})


def reference_frame(counts: NDArray[np.integer], means: F64, pinv: F64, *,
                    usable: NDArray[np.bool_], classes: tuple[str, ...]) -> pl.DataFrame:
    """One row per (cluster, class) with its reference statistics, NULL where the class is not
    usable (model.reference_stats, model.version_reference_stats)."""
    rows = [{"cluster": c, "class": name, "n_references": int(counts[c, k]),
             "usable": bool(usable[c, k]),
             "mean": means[c, k].tolist() if usable[c, k] else None,
             "pinv": pinv[c, k].ravel().tolist() if usable[c, k] else None}
            for c in range(counts.shape[0]) for k, name in enumerate(classes)]
    return pl.DataFrame(rows, schema=polars_schema("model.reference_stats"))


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for table in VERSION_TABLES:
        create_table(con, table, if_not_exists=True)


def has_versions(con: duckdb.DuckDBPyConnection) -> bool:
    return table_exists(con, "model.versions")


def store(con: duckdb.DuckDBPyConnection, model: FrozenModel, origin: str) -> bool:
    """Append a version (call inside the caller's transaction). Storing the same version again
    is a no-op (returns False); a different model under an existing version id is refused."""
    ensure_tables(con)
    row = first_row(con, "SELECT content_hash FROM model.versions WHERE version = ?",
                    [model.version])
    if row is not None:
        if row[0] != model.content_hash:
            raise WarehouseError(f"model version {model.version} already exists with another "
                                 f"content (hash {row[0][:12]}…, this one "
                                 f"{model.content_hash[:12]}…); versions are immutable")
        return False
    v = model.version
    created = model.provenance.get("created_at")
    created = datetime.fromisoformat(created).astimezone(UTC).replace(tzinfo=None) \
        if created else None
    con.execute("INSERT INTO model.versions VALUES (?, ?, ?, ?, now(), ?, ?, ?, ?, ?, ?)",
                [v, model.content_hash, model.run_id, created, origin,
                 json.dumps(list(model.classes)), json.dumps(list(model.features)),
                 json.dumps(model.selection), json.dumps(model.params),
                 json.dumps(model.provenance)])
    insert_frame(con, "model.version_scaling", pl.DataFrame(
        [{"version": v, **vars(s)} for s in model.scaling],
        schema=polars_schema("model.version_scaling")))
    insert_frame(con, "model.version_components",
                 component_frame(model.mixture).with_columns(version=pl.lit(v)))
    insert_frame(con, "model.version_reference_stats", reference_frame(
        model.reference_counts, model.reference_means, model.reference_pinv,
        usable=model.usable, classes=model.classes).with_columns(version=pl.lit(v)))
    for table in VERSION_TABLES:
        check_written(con, table)
    return True


def list_versions(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per stored version, newest first."""
    if not has_versions(con):
        return pl.DataFrame()
    return con.sql("""
        SELECT v.version, v.origin, v.created_at, v.stored_at,
               CAST(json_extract(v.params, '$.n_components') AS INTEGER) AS components,
               (SELECT count(*) FILTER (WHERE r.usable) FROM model.version_reference_stats r
                WHERE r.version = v.version) AS usable_pairs,
               (SELECT sum(r.n_references) FROM model.version_reference_stats r
                WHERE r.version = v.version)::BIGINT AS references,
               left(v.content_hash, 12) AS hash
        FROM model.versions v ORDER BY v.stored_at DESC, v.created_at DESC, v.version DESC
    """).pl()


def resolve(con: duckdb.DuckDBPyConnection, ref: str | None) -> str:
    """A version id from an id, a unique prefix of an id or hash, or None / 'latest' (the
    version stored last)."""
    if not has_versions(con) or first_row(con, "SELECT 1 FROM model.versions LIMIT 1") is None:
        raise WarehouseError("the warehouse holds no model version: run `xpipe classify` or "
                             "`xpipe models import FILE`")
    if ref is None or ref == "latest":
        return str(list_versions(con)["version"][0])
    rows = con.execute("SELECT version FROM model.versions WHERE version = ? "
                       "OR starts_with(version, ?) OR starts_with(content_hash, ?)",
                       [ref, ref, ref.lower()]).fetchall()
    exact = [r[0] for r in rows if r[0] == ref]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return str(rows[0][0])
    if not rows:
        known = ", ".join(list_versions(con)["version"].head(5).to_list())
        raise WarehouseError(f"no model version {ref!r} in the warehouse (latest: {known})")
    raise WarehouseError(f"model version {ref!r} is ambiguous: "
                         + ", ".join(sorted(r[0] for r in rows)))


def load(con: duckdb.DuckDBPyConnection, ref: str | None = None) -> FrozenModel:
    """Read a stored version and check it against its hash."""
    version = resolve(con, ref)
    meta = only_row(con, "SELECT content_hash, classes, features, selection, params, "
                          "provenance FROM model.versions WHERE version = ?", [version])
    stored_hash, classes, features, selection, params, provenance = meta
    classes, features = tuple(json.loads(classes)), tuple(json.loads(features))
    def rows(query: str) -> pl.DataFrame:
        return con.sql(query, params=[version]).pl()

    scaling = tuple(FeatureScaling(**r) for r in rows(
        "SELECT feature, position, transform, min_nonzero, log_offset, min_value, max_value "
        "FROM model.version_scaling WHERE version = ? ORDER BY position").iter_rows(named=True))
    comps = rows("SELECT weight, mean, covariance FROM model.version_components "
                 "WHERE version = ? ORDER BY component")
    f = len(features)
    mixture = MixtureParams(comps["weight"].to_numpy().astype(np.float64),
                            np.array(comps["mean"].to_list(), dtype=np.float64),
                            np.array(comps["covariance"].to_list(),
                                     dtype=np.float64).reshape(-1, f, f))
    stats = rows("SELECT cluster, class, n_references, usable, mean, pinv "
                 "FROM model.version_reference_stats WHERE version = ?")
    k, c = mixture.n_components, len(classes)
    counts, means, pinv = np.zeros((k, c), np.int64), np.zeros((k, c, f)), np.zeros((k, c, f, f))
    code = {name: i for i, name in enumerate(classes)}
    for row in stats.iter_rows(named=True):
        i, j = row["cluster"], code[row["class"]]
        counts[i, j] = row["n_references"]
        if row["usable"]:
            means[i, j] = row["mean"]
            pinv[i, j] = np.asarray(row["pinv"]).reshape(f, f)
    model = FrozenModel(version=version, classes=classes, features=features,
                        selection=_json(selection), params=_json(params), scaling=scaling,
                        mixture=mixture, reference_counts=counts, reference_means=means,
                        reference_pinv=pinv, provenance=_json(provenance))
    if model.content_hash != stored_hash:
        raise WarehouseError(f"model version {version} was altered: stored hash "
                             f"{stored_hash[:12]}…, content now hashes to "
                             f"{model.content_hash[:12]}…")
    return model


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def restore_scaling(con: duckdb.DuckDBPyConnection, model: FrozenModel) -> None:
    """model.preprocessing_params as the version stored it, so that the warehouse's own
    model.scaled_features scales other detections (new ones, Monte Carlo draws) with it."""
    scaling = pl.DataFrame([vars(s) for s in model.scaling]).with_columns(
        run_id=pl.lit(model.run_id))
    create_table(con, "model.preprocessing_params", replace=True)
    insert_frame(con, "model.preprocessing_params", scaling)
