"""A contract's column types as Arrow and Polars see them, for frames built in Python.

Frames that Python hands to the warehouse (or returns to a user) take their types from the
table's contract here, so no column type is written twice.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
import pyarrow as pa

from xpipe.warehouse.contracts import contract

ARROW = {"DOUBLE": pa.float64(), "VARCHAR": pa.string(), "JSON": pa.string(),
         "INTEGER": pa.int32(), "SMALLINT": pa.int16(), "BIGINT": pa.int64(),
         "BOOLEAN": pa.bool_(), "DOUBLE[]": pa.list_(pa.float64()),
         "TIMESTAMP": pa.timestamp("us")}


def arrow_type(duckdb_type: str) -> pa.DataType:
    try:
        return ARROW[duckdb_type]
    except KeyError:
        raise KeyError(f"no Arrow type for the DuckDB type {duckdb_type!r}") from None


def polars_schema(table: str, columns: Iterable[str] | None = None) -> pl.Schema:
    """{column: Polars type} of `table`'s contract, for `columns` (default: all, in order)."""
    declared = {c.name: c.type for c in contract(table).columns}
    names = list(columns) if columns is not None else list(declared)
    return pl.Schema({name: pl.Series(pa.array([], type=arrow_type(declared[name]))).dtype
                      for name in names})
