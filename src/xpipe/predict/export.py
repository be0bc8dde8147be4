"""Write the results in the published catalogue's layout (Pérez-Díaz et al. 2024).

DuckDB streams each table straight to disk (COPY), so nothing is materialised in Python.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import duckdb

from xpipe.core.errors import InputError
from xpipe.warehouse.connection import require_tables, sql_literal
from xpipe.warehouse.seeds import class_names

FORMATS = ("csv", "parquet")


def detection_level_query() -> str:
    probs = ", ".join(f'"{c}"' for c in class_names())
    return ("SELECT row_number() OVER (ORDER BY name, obsid, det_id) - 1 AS \"index\", name, "
            f"obsid, cluster, ra, dec, pred_class AS main_type, {probs} "
            "FROM results.detection_class WHERE pred_class IS NOT NULL "
            "ORDER BY name, obsid, det_id")


def _copy(con: duckdb.DuckDBPyConnection, query: str, path: Path, *, fmt: str,
          header: bool = True) -> None:
    options = "FORMAT parquet" if fmt == "parquet" else f"FORMAT csv, HEADER {str(header).lower()}"
    con.execute(f"COPY ({query}) TO {sql_literal(path)} ({options})")


def _copy_csv_unnamed_index(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """The published per-detection CSV has a pandas index column with an empty header."""
    columns = [d[0] for d in con.sql(f"SELECT * FROM ({query}) LIMIT 0").description]
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        body = Path(tmp) / "body.csv"
        _copy(con, query, body, fmt="csv", header=False)
        with path.open("w", newline="") as out, body.open() as src:
            out.write(",".join(["", *columns[1:]]) + "\n")
            shutil.copyfileobj(src, out)


def export_results(con: duckdb.DuckDBPyConnection, out_dir: Path, fmt: str = "csv"
                   ) -> dict[str, Path]:
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    require_tables(con, ["results.detection_class", "results.uniquely_classified",
                         "results.ambiguous_classification"],
                   "run `xpipe classify` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    target = out_dir / f"detection_level_classification.{fmt}"
    if fmt == "csv":
        _copy_csv_unnamed_index(con, detection_level_query(), target)
    else:
        _copy(con, detection_level_query(), target, fmt=fmt)
    written["detection_level_classification"] = target
    for view in ("uniquely_classified", "ambiguous_classification"):
        target = out_dir / f"{view}.{fmt}"
        _copy(con, f"SELECT * FROM results.{view}", target, fmt=fmt)
        written[view] = target
    return written
