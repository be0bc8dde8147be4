"""Frozen model versions: what `xpipe classify` fitted, stored immutably and moved as one file.

A version holds everything needed to classify a detection later exactly as the batch run did:
the selection, the scaling parameters, the mixture, the per (cluster, class) reference
statistics and the class list, with the run it came from and a SHA-256 of that content. Every
classify run stores one (its id is the run id); tables are only ever appended to, and the hash
is checked whenever a version is read, so an altered version is refused rather than used.

The file `xpipe models export` writes is a zip (`.npz`): `model.json` (format, version, hash,
classes, features, selection, parameters, scaling, provenance) and plain float64/int64 `.npy`
arrays (`mixture_*`, `reference_*`). It is read with `allow_pickle=False` and checked member by
member, so loading it executes no code; `np.load(file)` or `unzip -p file model.json` inspect it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
from numpy.typing import NDArray

from xpipe import __version__
from xpipe.core.errors import ModelFileError, WarehouseError
from xpipe.method.kernel import MahalanobisSoftmin
from xpipe.method.mixture import MixtureParams
from xpipe.warehouse.connection import first_row, insert_frame, only_row, table_exists
from xpipe.warehouse.sql_models import discover_models, run_checks

F64 = NDArray[np.float64]

FORMAT = "xpipe-model"
FORMAT_VERSION = 1
ARRAYS = {  # name: dtype; shapes follow from (components K, classes C, features F)
    "mixture_weights": "<f8", "mixture_means": "<f8", "mixture_covariances": "<f8",
    "reference_counts": "<i8", "reference_means": "<f8", "reference_pinv": "<f8",
}
MAX_MEMBER_BYTES = 64 * 2**20  # a model is ~100 kB; refuse anything absurd before reading it
VERSION_TABLES = ("model.versions", "model.version_scaling", "model.version_components",
                  "model.version_reference_stats")
_DDL = {
    "model.versions": "version VARCHAR, content_hash VARCHAR, run_id VARCHAR, "
                      "created_at TIMESTAMP, stored_at TIMESTAMP, origin VARCHAR, "
                      "classes JSON, features JSON, selection JSON, params JSON, provenance JSON",
    "model.version_scaling": "version VARCHAR, feature VARCHAR, position INTEGER, "
                             "transform VARCHAR, min_nonzero DOUBLE, log_offset DOUBLE, "
                             "min_value DOUBLE, max_value DOUBLE",
    "model.version_components": "version VARCHAR, component INTEGER, weight DOUBLE, "
                                "mean DOUBLE[], covariance DOUBLE[]",
    "model.version_reference_stats": "version VARCHAR, cluster INTEGER, class VARCHAR, "
                                     "n_references BIGINT, usable BOOLEAN, mean DOUBLE[], "
                                     "pinv DOUBLE[]",
}




@dataclass(frozen=True)
class FeatureScaling:
    """One row of model.preprocessing_params: how a raw feature is scaled (METHOD §3)."""

    feature: str
    position: int
    transform: str  # none | minmax | log_minmax
    min_nonzero: float | None
    log_offset: float | None
    min_value: float | None
    max_value: float | None


@dataclass(frozen=True, eq=False)
class FrozenModel:
    """An immutable, self-contained classification model (one version)."""

    version: str
    classes: tuple[str, ...]
    features: tuple[str, ...]
    selection: dict[str, Any]  # min_flux_significance_b, require_spectral_fits
    params: dict[str, Any]  # n_components, random_state, fit_sample_size, min_references
    scaling: tuple[FeatureScaling, ...]
    mixture: MixtureParams
    reference_counts: NDArray[np.int64]  # (K, C)
    reference_means: F64  # (K, C, F); zeros where the class is not usable
    reference_pinv: F64  # (K, C, F, F); zeros where the class is not usable
    provenance: dict[str, Any] = field(default_factory=dict)  # run_id, created_at, counts

    @property
    def run_id(self) -> str:
        return str(self.provenance.get("run_id", self.version))

    @property
    def min_references(self) -> int:
        return int(self.params["min_references"])

    @property
    def usable(self) -> NDArray[np.bool_]:
        return self.reference_counts >= max(self.min_references, 2)

    def arrays(self) -> dict[str, np.ndarray]:
        values = {"mixture_weights": self.mixture.weights, "mixture_means": self.mixture.means,
                  "mixture_covariances": self.mixture.covariances,
                  "reference_counts": self.reference_counts,
                  "reference_means": self.reference_means, "reference_pinv": self.reference_pinv}
        return {k: np.ascontiguousarray(v, dtype=ARRAYS[k]) for k, v in values.items()}

    def content(self) -> dict[str, Any]:
        """Everything but the arrays and provenance, as JSON values (floats round-trip)."""
        return {"classes": list(self.classes), "features": list(self.features),
                "selection": self.selection, "params": self.params,
                "scaling": [vars(s) for s in self.scaling]}

    @cached_property
    def content_hash(self) -> str:
        return content_hash(self.content(), self.arrays())

    def kernel(self) -> MahalanobisSoftmin:
        """The fitted kernel, restored from the stored statistics."""
        return MahalanobisSoftmin(self.min_references).set_statistics(
            self.reference_counts, self.reference_means, self.reference_pinv)


def content_hash(content: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the canonical JSON of `content` and each array's name, dtype, shape, bytes."""
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                       allow_nan=False).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name], dtype=ARRAYS[name])
        digest.update(f"\n{name}:{array.dtype.str}:{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def from_fit(run_id: str, *, selection: dict[str, Any], params: dict[str, Any],
             scaling: list[FeatureScaling], mixture: MixtureParams, kernel: MahalanobisSoftmin,
             classes: tuple[str, ...], features: tuple[str, ...],
             counts: dict[str, int] | None = None) -> FrozenModel:
    """The version a classify run just fitted (its id is the run id)."""
    return FrozenModel(
        version=run_id, classes=tuple(classes), features=tuple(features),
        selection=dict(selection), params=dict(params), scaling=tuple(scaling),
        mixture=MixtureParams(np.asarray(mixture.weights, dtype=np.float64),
                              np.asarray(mixture.means, dtype=np.float64),
                              np.asarray(mixture.covariances, dtype=np.float64)),
        reference_counts=np.asarray(kernel.counts_, dtype=np.int64),
        reference_means=np.where(kernel.usable_[..., None], kernel.means_, 0.0),
        reference_pinv=np.where(kernel.usable_[..., None, None], kernel.pinv_, 0.0),
        provenance={"run_id": run_id,
                    "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                    "xpipe_version": __version__, **({"counts": counts} if counts else {})},
    )


# ------------------------------------------------------------------------------------------
# In the warehouse
# ------------------------------------------------------------------------------------------


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
    return pl.DataFrame(rows, schema={
        "cluster": pl.Int32, "class": pl.Utf8, "n_references": pl.Int64,
        "usable": pl.Boolean, "mean": pl.List(pl.Float64), "pinv": pl.List(pl.Float64)})


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for table, columns in _DDL.items():
        if not table_exists(con, table):
            con.execute(f"CREATE TABLE {table} ({columns})")


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
        schema={"version": pl.Utf8, "feature": pl.Utf8, "position": pl.Int32,
                "transform": pl.Utf8, "min_nonzero": pl.Float64, "log_offset": pl.Float64,
                "min_value": pl.Float64, "max_value": pl.Float64}))
    insert_frame(con, "model.version_components",
                 component_frame(model.mixture).with_columns(version=pl.lit(v)))
    insert_frame(con, "model.version_reference_stats", reference_frame(
        model.reference_counts, model.reference_means, model.reference_pinv,
        usable=model.usable, classes=model.classes).with_columns(version=pl.lit(v)))
    models = discover_models()
    for table in VERSION_TABLES:
        run_checks(con, models[table])
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
    model = FrozenModel(version, classes, features, _json(selection), _json(params), scaling,
                        mixture, counts, means, pinv, _json(provenance))
    if model.content_hash != stored_hash:
        raise WarehouseError(f"model version {version} was altered: stored hash "
                             f"{stored_hash[:12]}…, content now hashes to "
                             f"{model.content_hash[:12]}…")
    return model


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


# ------------------------------------------------------------------------------------------
# As a file
# ------------------------------------------------------------------------------------------


def write_file(model: FrozenModel, path: Path) -> Path:
    """Write the portable model file (a zip of model.json and plain .npy arrays)."""
    arrays = model.arrays()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": model.version,
            "content_hash": model.content_hash, **model.content(),
            "provenance": model.provenance,
            "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)}
                       for k, v in arrays.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.json", json.dumps(meta, indent=1, allow_nan=False))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def read_file(path: Path) -> FrozenModel:
    """Read and verify a model file; no pickle, no code: JSON and plain numeric arrays only."""
    origin = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{origin}: not an xpipe model file (a zip archive): {exc}") from exc
    with archive:
        expected = {"model.json", *(f"{name}.npy" for name in ARRAYS)}
        members = {info.filename: info for info in archive.infolist()}
        if set(members) != expected:
            raise ModelFileError(f"{origin}: expected members {sorted(expected)}, found "
                                 f"{sorted(members)}")
        big = [n for n, info in members.items() if info.file_size > MAX_MEMBER_BYTES]
        if big:
            raise ModelFileError(f"{origin}: member {big[0]} is implausibly large")
        try:
            meta = json.loads(archive.read("model.json"))
        except ValueError as exc:
            raise ModelFileError(f"{origin}: model.json is not valid JSON: {exc}") from exc
        arrays = {name: _read_array(archive, name, origin) for name in ARRAYS}
    return _model_from_parts(meta, arrays, origin)


def _read_array(archive: zipfile.ZipFile, name: str, origin: str) -> np.ndarray:
    with archive.open(f"{name}.npy") as handle:
        try:
            array = np.lib.format.read_array(io.BytesIO(handle.read()), allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle: refused
            raise ModelFileError(f"{origin}: {name}.npy is not a plain numeric array: "
                                 f"{exc}") from exc
    if array.dtype.str != ARRAYS[name]:
        raise ModelFileError(f"{origin}: {name}.npy has dtype {array.dtype.str}, expected "
                             f"{ARRAYS[name]}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ModelFileError(f"{origin}: {name}.npy holds NaN or infinite values")
    return array


def _model_from_parts(meta: dict[str, Any], arrays: dict[str, np.ndarray], origin: str
                      ) -> FrozenModel:
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{origin}: format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r}; this xpipe reads {FORMAT!r} "
                             f"version {FORMAT_VERSION}")
    try:
        classes, features = tuple(meta["classes"]), tuple(meta["features"])
        scaling = tuple(FeatureScaling(**s) for s in meta["scaling"])
        model = FrozenModel(
            version=str(meta["version"]), classes=classes, features=features,
            selection=dict(meta["selection"]), params=dict(meta["params"]), scaling=scaling,
            mixture=MixtureParams(arrays["mixture_weights"], arrays["mixture_means"],
                                  arrays["mixture_covariances"]),
            reference_counts=arrays["reference_counts"],
            reference_means=arrays["reference_means"], reference_pinv=arrays["reference_pinv"],
            provenance=dict(meta.get("provenance", {})))
        expected_hash = str(meta["content_hash"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{origin}: model.json lacks or mistypes {exc}") from exc
    check_shapes(model, origin)
    if model.content_hash != expected_hash:
        raise ModelFileError(f"{origin}: content hash mismatch (file says "
                             f"{expected_hash[:12]}…, content hashes to "
                             f"{model.content_hash[:12]}…): the file was altered or damaged")
    return model


def check_shapes(model: FrozenModel, origin: str) -> None:
    """Arrays must agree with each other and with the class and feature lists."""
    k, c, f = len(model.mixture.weights), len(model.classes), len(model.features)
    expected = {"mixture_weights": (k,), "mixture_means": (k, f),
                "mixture_covariances": (k, f, f), "reference_counts": (k, c),
                "reference_means": (k, c, f), "reference_pinv": (k, c, f, f)}
    for name, array in model.arrays().items():
        if array.shape != expected[name]:
            raise ModelFileError(f"{origin}: {name} has shape {array.shape}, expected "
                                 f"{expected[name]} for {k} components, {c} classes, "
                                 f"{f} features")
    if [s.feature for s in model.scaling] != list(model.features):
        raise ModelFileError(f"{origin}: scaling lists {[s.feature for s in model.scaling]}, "
                             f"features are {list(model.features)}")


# ------------------------------------------------------------------------------------------
# For people
# ------------------------------------------------------------------------------------------


def describe(model: FrozenModel) -> str:
    """`xpipe models show`: provenance, selection, scaling, mixture and reference counts."""
    sel = model.selection
    cut = sel.get("min_flux_significance_b")
    lines = [
        f"model version {model.version}",
        f"  content hash   {model.content_hash} (verified)",
        f"  from run       {model.run_id}, frozen {model.provenance.get('created_at', '?')}, "
        f"xpipe {model.provenance.get('xpipe_version', '?')}",
        f"  selection      flux_significance_b > {cut}" if cut is not None else
        "  selection      no significance cut",
        f"                 spectral fits required: {sel.get('require_spectral_fits')}",
        f"  method         K = {model.params.get('n_components')}, random_state "
        f"{model.params.get('random_state')}, min_references {model.min_references}",
    ]
    counts = model.provenance.get("counts") or {}
    if counts:
        lines.append("  trained on     " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    lines += ["", "scaling (METHOD §3):",
              f"  {'feature':<13} {'transform':<11} {'log offset':>12} {'min':>12} {'max':>12}"]
    for s in model.scaling:
        lines.append(f"  {s.feature:<13} {s.transform:<11} {_num(s.log_offset):>12} "
                     f"{_num(s.min_value):>12} {_num(s.max_value):>12}")
    lines += ["", "mixture weights: " + ", ".join(f"{w:.3f}" for w in model.mixture.weights),
              "", "references per cluster and class (* usable):",
              "  cluster " + " ".join(f"{name[:9]:>9}" for name in model.classes)]
    usable = model.usable
    for cl in range(len(model.mixture.weights)):
        cells = [f"{model.reference_counts[cl, k]:>8}{'*' if usable[cl, k] else ' '}"
                 for k in range(len(model.classes))]
        lines.append(f"  {cl:>7} " + " ".join(cells))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
