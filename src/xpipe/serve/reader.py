"""One read-only DuckDB connection for the whole server, a fresh cursor per request.

The connection is opened read-only with the user-SQL guard's configuration locked in
(`warehouse.user_sql.connect_guarded`), so nothing the server runs — its own queries or the
SQL page's — can write the warehouse, attach a database, load an extension or change a
setting. DuckDB connections are not safe to share between threads; cursors are, one per call,
which is what Flask's threaded server needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import duckdb
import polars as pl

from xpipe.core.config import Settings
from xpipe.science.common import require_classified
from xpipe.warehouse.connection import table_exists
from xpipe.warehouse.user_sql import connect_guarded

T = TypeVar("T")


class WarehouseReader:
    """Read-only access to a classified warehouse; `close()` releases the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.settings = Settings(warehouse=self.path)
        self._con = connect_guarded(self.settings)
        try:
            require_classified(self._con)
        except BaseException:
            self._con.close()
            raise
        self._cache: dict[str, object] = {}
        self._cache_lock = threading.Lock()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for one request (close it, or use it in a `with`)."""
        return self._con.cursor()

    def frame(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
              ) -> pl.DataFrame:
        with self.cursor() as cur:
            return cur.sql(sql, params=params).pl()

    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
             ) -> list[tuple[Any, ...]]:
        with self.cursor() as cur:
            result = cur.execute(sql, params) if params is not None else cur.execute(sql)
            return result.fetchall()

    def has_table(self, name: str) -> bool:
        """Whether `schema.name` is a table or view of the warehouse."""
        with self.cursor() as cur:
            return table_exists(cur, name)

    def cached(self, key: str, compute: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`compute(cursor)` once per server under `key`: while the server holds the file
        read-only no other process can write it, so what was read stays true."""
        with self._cache_lock:
            if key not in self._cache:
                with self.cursor() as cur:
                    self._cache[key] = compute(cur)
            return cast(T, self._cache[key])

    def close(self) -> None:
        self._con.close()
