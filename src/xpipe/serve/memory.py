"""The explorer's in-memory DuckDB: what the Sky and Properties pages query per request.

The server never writes the warehouse, and some of what a view needs (the position of every
one of 3.4 million sources at 10⁷ detections) costs a group-by over every detection. So each
page copies, once at startup, the few columns its views read into a private in-memory
database, already projected and joined; every request then filters and aggregates there.
Like the reader, each call runs on a cursor of its own (Flask answers requests in threads).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl


class MemoryTables:
    """A private in-memory DuckDB holding derived tables; `load` adds one from a frame."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:")
        self._lock = threading.Lock()

    def load(self, table: str, frame: pl.DataFrame, select: str = "*", where: str = "TRUE",
             order: str | None = None) -> None:
        """Create `table` AS SELECT `select` FROM the frame WHERE `where`, stored in `order`
        (replacing a table of that name)."""
        order_by = f" ORDER BY {order}" if order else ""
        with self._lock, self._con.cursor() as cur:
            cur.register("incoming", frame.to_arrow())
            cur.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT {select} FROM incoming "
                        f"WHERE {where}{order_by}")
            cur.unregister("incoming")

    def frame(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
              ) -> pl.DataFrame:
        with self._con.cursor() as cur:
            return cur.sql(sql, params=params).pl()

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        with self._con.cursor() as cur:
            row = (cur.execute(sql, params) if params is not None else cur.execute(sql)).fetchone()
            return None if row is None else row[0]

    def close(self) -> None:
        self._con.close()
