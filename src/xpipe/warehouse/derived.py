"""State derived from the loaded detections, and its reset when a load replaces them.

Everything in `model` and `results` is computed from raw.detections (a classification, the
appended `classify-new` results, BIC, validation and stability), except the seeds and the
stored model versions (`model.versions`, `model.version_*`), which are immutable and
self-contained. A load that swaps in other detections drops the derived tables in its own
transaction, so no result ever describes detections that are no longer there (its det_id
would point at others).
"""

from __future__ import annotations

import duckdb

from xpipe.warehouse.connection import drop_relation
from xpipe.warehouse.sql_models import discover_models

DERIVED_SCHEMAS = ("model", "results")


def is_kept(qualified: str, seeds: set[str]) -> bool:
    """Seeds and stored model versions survive a load; everything else derived does not."""
    schema, name = qualified.split(".")
    return qualified in seeds or (schema == "model" and (name == "versions"
                                                         or name.startswith("version_")))


def derived_relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables and views of `model` and `results` that a load makes stale, sorted."""
    seeds = {m.name for m in discover_models().values() if m.materialized == "seed"}
    placeholders = ", ".join("?" for _ in DERIVED_SCHEMAS)
    rows = con.execute(
        f"SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT temporary AND "
        f"schema_name IN ({placeholders}) UNION SELECT schema_name, view_name FROM "
        f"duckdb_views() WHERE NOT temporary AND schema_name IN ({placeholders}) ORDER BY ALL",
        [*DERIVED_SCHEMAS, *DERIVED_SCHEMAS]).fetchall()
    return [f"{s}.{t}" for s, t in rows if not is_kept(f"{s}.{t}", seeds)]


def reset_derived(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Drop every derived table and view (call inside the load's transaction); returns them."""
    dropped = derived_relations(con)
    for qualified in dropped:
        drop_relation(con, qualified)
    return dropped
