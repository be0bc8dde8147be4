"""`xpipe anomalies`: the sources whose detections fit the model worst (scores: method.anomaly)."""

from __future__ import annotations

import duckdb
import polars as pl

from xpipe.core.errors import WarehouseError
from xpipe.warehouse.connection import require_tables, table_exists


def top_anomalies(con: duckdb.DuckDBPyConnection, top: int) -> pl.DataFrame:
    """The `top` sources whose most anomalous detection is most anomalous, with its features."""
    require_tables(con, ["results.detection_class"], "run `xpipe classify` first")
    if not table_exists(con, "results.source_anomaly"):
        raise WarehouseError("this classification has no anomaly scores (it predates them): "
                             "run `xpipe classify` again")
    return con.sql("SELECT * FROM results.source_anomaly ORDER BY anomaly_rank LIMIT ?",
                   params=[int(top)]).pl()
