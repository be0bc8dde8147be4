"""Write the results in the published catalogue's layout (Pérez-Díaz et al. 2024).

Each table goes through the one file writer (`warehouse.file_formats`): CSV and Parquet stream
from DuckDB (COPY), VOTable and FITS chunk by chunk, and every format but CSV carries the
provenance of the stored classification in its metadata.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import duckdb

from xpipe.warehouse.connection import require_tables
from xpipe.warehouse.file_formats import FILE_SUFFIXES, checked_format, write_result
from xpipe.warehouse.provenance import FileProvenance, file_provenance
from xpipe.warehouse.seeds import class_names

DETECTION_LEVEL = "detection_level_classification"
SOURCE_VIEWS = ("uniquely_classified", "ambiguous_classification")


def detection_level_query() -> str:
    probs = ", ".join(f'"{c}"' for c in class_names())
    return ("SELECT row_number() OVER (ORDER BY name, obsid, det_id) - 1 AS \"index\", name, "
            f"obsid, cluster, ra, dec, pred_class AS main_type, {probs} "
            "FROM results.detection_class WHERE pred_class IS NOT NULL "
            "ORDER BY name, obsid, det_id")


def published_queries() -> dict[str, str]:
    """Each published table's name and the query that gives it."""
    return {DETECTION_LEVEL: detection_level_query(),
            **{view: f"SELECT * FROM results.{view}" for view in SOURCE_VIEWS}}


def _write_csv_unnamed_index(con: duckdb.DuckDBPyConnection, query: str, path: Path,
                             provenance: FileProvenance) -> None:
    """The published per-detection CSV has a pandas index column with an empty header."""
    relation = con.sql(query)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        body, whole = Path(tmp) / "body.csv", Path(tmp) / path.name
        write_result(con, relation, body, "csv", provenance, header=False)
        with whole.open("w", newline="") as out, body.open() as src:
            out.write(",".join(["", *relation.columns[1:]]) + "\n")
            shutil.copyfileobj(src, out)
        os.replace(whole, path)


def export_results(con: duckdb.DuckDBPyConnection, out_dir: Path, fmt: str = "csv", *,
                   provenance: FileProvenance | None = None, chunk_rows: int = 100_000
                   ) -> dict[str, Path]:
    """The three published tables as `out_dir/<table>.<csv|parquet|vot|fits>`; `provenance`
    defaults to the stored classification's."""
    fmt = checked_format(fmt)
    require_tables(con, ["results.detection_class", "results.uniquely_classified",
                         "results.ambiguous_classification"],
                   "run `xpipe classify` first")
    provenance = provenance or file_provenance(con)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, query in published_queries().items():
        target = out_dir / f"{name}{FILE_SUFFIXES[fmt]}"
        if fmt == "csv" and name == DETECTION_LEVEL:
            _write_csv_unnamed_index(con, query, target, provenance)
        else:
            write_result(con, con.sql(query), target, fmt, replace(provenance, query=query),
                         chunk_rows=chunk_rows)
        written[name] = target
    return written
