"""What the science commands share: the stored classification they start from (its run and
parameters), its fit sample, and whether a stored analysis is current for it."""

from __future__ import annotations

import json
from dataclasses import fields

import duckdb
import numpy as np
from numpy.typing import NDArray

from xpipe.predict import scoring
from xpipe.predict.batch import ClassifyParams
from xpipe.warehouse.connection import (
    WarehouseError,
    first_row,
    require_tables,
    table_exists,
)
from xpipe.warehouse.provenance import stored_classify_run

F64 = NDArray[np.float64]

CLASSIFIED_TABLES = ["model.scaled_features", "model.detection_roles", "model.detection_cluster",
                     "model.gmm_components", "results.detection_class", "results.source_class"]


def require_classified(con: duckdb.DuckDBPyConnection) -> None:
    """Stop with the command to run when the warehouse holds no classification yet."""
    require_tables(con, ["raw.detections"], "load a catalogue first with `xpipe warehouse`")
    require_tables(con, CLASSIFIED_TABLES, "run `xpipe classify` first")


def classify_run_id(con: duckdb.DuckDBPyConnection) -> str:
    """The run that fitted the stored clustering: what every science output is computed for."""
    return str(stored_classify_run(con))


def classify_params(con: duckdb.DuckDBPyConnection) -> ClassifyParams:
    """The parameters of the classification stored in the warehouse (from meta.runs)."""
    row = first_row(con, "SELECT params FROM meta.runs WHERE run_id = ?", [classify_run_id(con)])
    if row is None:
        raise WarehouseError("meta.runs has no record of the stored classification: "
                             "run `xpipe classify` again")
    stored = json.loads(row[0]) if isinstance(row[0], str) else dict(row[0])
    known = {f.name for f in fields(ClassifyParams)}
    return ClassifyParams(**{k: v for k, v in stored.items() if k in known})


def fit_sample(con: duckdb.DuckDBPyConnection, params: ClassifyParams) -> F64:
    """The scaled features `xpipe classify` fits its mixture on, for these parameters."""
    return scoring.fit_sample(con, sample_size=params.fit_sample_size,
                              random_state=params.random_state)


def stored_run_id(con: duckdb.DuckDBPyConnection, table: str) -> str | None:
    """The classification an analysis table was computed for, or None when it does not exist."""
    if not table_exists(con, table):
        return None
    row = first_row(con, f"SELECT any_value(classify_run_id) FROM {table}")
    return None if row is None or row[0] is None else str(row[0])


def is_current(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """True when `table` exists and was computed for the classification stored now."""
    return stored_run_id(con, table) == classify_run_id(con)
