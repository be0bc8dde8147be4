"""`xpipe warehouse`: load a catalogue and its SIMBAD labels into `raw`, atomically.

The detections, the SIMBAD objects (or an offline match file) and the best-match cross-match
are built as staging tables and swapped in together in one transaction, which also drops
everything derived from the detections they replace (`warehouse.derived`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from xpipe.core.errors import InputError
from xpipe.core.progress import progress_bar
from xpipe.core.resources import sql_dir
from xpipe.ingest.files import check_unique, expand_inputs, load_files, open_input
from xpipe.warehouse.connection import first_row, scalar, staging_name, swap_in, transaction
from xpipe.warehouse.contracts import SchemaError, create_table, detection_key
from xpipe.warehouse.derived import reset_derived
from xpipe.warehouse.provenance import recorded_run
from xpipe.warehouse.sql_models import load_macros, render_sql, set_parameters

MATCH_FILE_MARKERS = {"angdist", "separation", "separation_arcsec"}
# Sources per cross-match partition. Measured: 3.4M sources (10^7 simulated detections) match
# in 2 partitions within a 250 MB memory_limit, and fail as one query; the default limit is 2 GB.
MATCH_PARTITION_SOURCES = 2_000_000


@dataclass(frozen=True)
class LoadRequest:
    detections: Path  # a file, or a folder of Parquet parts
    labels: Path | None  # SIMBAD objects or an offline match file; None: no labels
    match_radius_arcsec: float = 1.0


def _files(path: Path) -> list[Path]:
    return expand_inputs(path, "*.parquet")


def labels_are_match_file(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """A match file names the source and the separation; a SIMBAD table has neither."""
    columns = {c.lower() for c in open_input(con, _files(path)[0], "__probe").column_types}
    return bool(columns & MATCH_FILE_MARKERS) and bool(columns & {"name", "name_1"})


def stage_detections(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    files = _files(path)
    with progress_bar("load detections", total=None) as bar:
        rows = load_files(con, "raw.detections", files, progress=bar.update, id_column="det_id")
    # Not (obsid, obi, region_id) alone: in CSC one detection region can belong to two master
    # sources (ambiguous associations), and the per-detection query returns it once for each.
    check_unique(con, staging_name("raw.detections"), list(detection_key()),
                 what="detection key", where='"region_id" IS NOT NULL')
    return rows


def stage_simbad(con: duckdb.DuckDBPyConnection, path: Path | None) -> int:
    staged = staging_name("raw.simbad")
    if path is None:
        con.execute(f"DROP TABLE IF EXISTS {staged}")
        create_table(con, "raw.simbad", name=staged)
        return 0
    with progress_bar("load SIMBAD objects", total=None) as bar:
        rows = load_files(con, "raw.simbad", _files(path), progress=bar.update)
    check_unique(con, staged, ["main_id"], what="SIMBAD main_id")
    return rows


def stage_crossmatch(con: duckdb.DuckDBPyConnection, radius_arcsec: float) -> int:
    """Best match within the radius, from raw.detections and raw.simbad as swapped in by the
    enclosing transaction.

    Both sides are binned in cells once (two scratch tables, dropped afterwards), then matched
    in partitions of about MATCH_PARTITION_SOURCES sources each: one query over every source
    needs the join's hash table for all of them, which outgrew the 2 GB memory limit at 10^8
    detections, and binning inside each partition made the work grow with N × partitions.
    """
    if radius_arcsec <= 0:
        raise InputError(f"match radius must be positive, got {radius_arcsec} arcsec")
    set_parameters(con, {"match_radius_arcsec": float(radius_arcsec)})
    load_macros(con)
    scratch = [staging_name("raw.match_sources"), staging_name("raw.match_simbad_cells")]
    for table, model in zip(scratch, ("match_sources", "match_simbad_cells"), strict=True):
        con.execute(f"CREATE OR REPLACE TABLE {table} AS "
                    f"{render_sql((sql_dir() / 'ingest' / f'{model}.sql').read_text())}")
    partitions = max(1, -(-scalar(con, f"SELECT count(*) FROM {scratch[0]}")
                          // MATCH_PARTITION_SOURCES))
    sql = (sql_dir() / "ingest" / "simbad_match.sql").read_text()
    staged = staging_name("raw.simbad_match")
    con.execute(f"DROP TABLE IF EXISTS {staged}")
    create_table(con, "raw.simbad_match", name=staged)
    with progress_bar("cross-match", total=partitions, unit="partitions") as bar:
        for partition in range(partitions):
            set_parameters(con, {"match_partitions": partitions, "match_partition": partition})
            con.execute(f"INSERT INTO {staged} BY NAME {sql}")
            bar.update(1)
    for table in scratch:
        con.execute(f"DROP TABLE {table}")
    return scalar(con, f"SELECT count(*) FROM {staged}")


def stage_match_file(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """An offline cross-match (TOPCAT / CDS X-Match): keep each source's closest counterpart."""
    staged = staging_name("raw.simbad_match")
    with progress_bar("load SIMBAD matches", total=None) as bar:
        load_files(con, "raw.simbad_match", _files(path), progress=bar.update)
    con.execute(f"""
        CREATE OR REPLACE TABLE {staged} AS
        SELECT
            arg_min(source_file, (separation_arcsec, main_id)) AS source_file,
            arg_min(source_row, (separation_arcsec, main_id)) AS source_row,
            name,
            arg_min(main_id, (separation_arcsec, main_id)) AS main_id,
            arg_min(otype, (separation_arcsec, main_id)) AS otype,
            min(separation_arcsec) AS separation_arcsec
        FROM {staged}
        WHERE main_id IS NOT NULL
        GROUP BY name
    """)
    bad = first_row(con, f"SELECT name FROM {staged} WHERE otype IS NULL OR separation_arcsec IS "
                      "NULL ORDER BY name LIMIT 1")
    if bad:
        raise SchemaError(f"{path}: source {bad[0]!r} has a counterpart without otype or "
                          "separation")
    return scalar(con, f"SELECT count(*) FROM {staged}")


def load_catalogue(con: duckdb.DuckDBPyConnection, request: LoadRequest) -> dict[str, int]:
    params = {"detections": str(request.detections),
              "labels": str(request.labels) if request.labels else None,
              "match_radius_arcsec": request.match_radius_arcsec}
    with recorded_run(con, "warehouse", params) as run, transaction(con):
        with run.stage("detections"):
            run.count("detections", stage_detections(con, request.detections))
        match_file = request.labels is not None and labels_are_match_file(con, request.labels)
        with run.stage("labels"):
            run.count("simbad_objects",
                      stage_simbad(con, None if match_file else request.labels))
        swap_in(con, "raw.detections")
        run.count("derived_tables_reset", len(reset_derived(con)))
        swap_in(con, "raw.simbad")
        with run.stage("crossmatch"):
            if match_file and request.labels is not None:
                matched = stage_match_file(con, request.labels)
            else:
                matched = stage_crossmatch(con, request.match_radius_arcsec)
            run.count("matched_sources", matched)
        swap_in(con, "raw.simbad_match")
        run.count("sources", scalar(con,
            "SELECT count(*) FROM (SELECT name FROM raw.detections GROUP BY name)"))
    return run.row_counts
