"""Write the results in the published catalogue's layout (Pérez-Díaz et al. 2024).

Each table goes through the one file writer (`warehouse.file_formats`): CSV and Parquet stream
from DuckDB (COPY), VOTable and FITS chunk by chunk, and every format but CSV carries the
provenance of the stored classification in its metadata.

Beside the published layout, which is never changed, the results of `xpipe uncertainty` go in
files of their own (source_class_stability, detection_class_intervals) when they are current
for the stored classification; when absent or stale they are not written, and the caller is
told why (ExportResult.skipped).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from xpipe.predict.uncertainty import uncertainty_state
from xpipe.warehouse.connection import require_tables
from xpipe.warehouse.file_formats import FILE_SUFFIXES, checked_format, write_result
from xpipe.warehouse.provenance import FileProvenance, file_provenance
from xpipe.warehouse.seeds import class_names

DETECTION_LEVEL = "detection_level_classification"
SOURCE_VIEWS = ("uniquely_classified", "ambiguous_classification")
UNCERTAINTY_FILES = ("source_class_stability", "detection_class_intervals")


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


def uncertainty_queries() -> dict[str, str]:
    """The uncertainty files: per source its class stability; per classified detection and
    class its probability with the 68 % and 95 % intervals, its agreement and flag (the runs
    are named once, in the source file: run_id, classify_run_id)."""
    return {
        "source_class_stability": "SELECT * FROM results.source_class_stability ORDER BY name",
        "detection_class_intervals": (
            "SELECT i.name, u.obsid, i.det_id, i.class, u.pred_class, i.probability, "
            "i.mean_probability, i.lo68, i.hi68, i.lo95, i.hi95, i.pred_fraction, "
            "u.pred_agreement, u.flag, u.n_draws "
            "FROM results.detection_class_intervals AS i "
            "JOIN results.detection_class_uncertainty AS u USING (det_id) "
            "JOIN model.classes AS c USING (class) "
            "ORDER BY i.name, u.obsid, i.det_id, c.class_order")}


@dataclass
class ExportResult:
    written: dict[str, Path] = field(default_factory=dict)
    skipped: str = ""  # why the uncertainty files were not written ('' when they were)
    removed: list[Path] = field(default_factory=list)  # an earlier export's, not for these


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
                   ) -> ExportResult:
    """The three published tables as `out_dir/<table>.<csv|parquet|vot|fits>`, and the
    uncertainty files beside them when current; `provenance` defaults to the stored
    classification's."""
    fmt = checked_format(fmt)
    require_tables(con, ["results.detection_class", "results.uniquely_classified",
                         "results.ambiguous_classification"],
                   "run `xpipe classify` first")
    provenance = provenance or file_provenance(con)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult()
    state = uncertainty_state(con)
    queries = published_queries()
    if state.current:
        queries |= uncertainty_queries()
    else:
        result.skipped = state.message()
        result.removed = _remove_earlier_uncertainty_files(out_dir, fmt)
    for name, query in queries.items():
        target = out_dir / f"{name}{FILE_SUFFIXES[fmt]}"
        if fmt == "csv" and name == DETECTION_LEVEL:
            _write_csv_unnamed_index(con, query, target, provenance)
        else:
            write_result(con, con.sql(query), target, fmt, replace(provenance, query=query),
                         chunk_rows=chunk_rows)
        result.written[name] = target
    return result


def _remove_earlier_uncertainty_files(out_dir: Path, fmt: str) -> list[Path]:
    """An earlier export's uncertainty files in `out_dir` describe another classification (or
    draws no longer stored): left beside the new published files, a reader would pair them."""
    earlier = [path for name in uncertainty_queries()
               if (path := out_dir / f"{name}{FILE_SUFFIXES[fmt]}").is_file()]
    for path in earlier:
        path.unlink()
    return earlier
