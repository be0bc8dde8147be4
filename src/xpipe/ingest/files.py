"""Load catalogue files into `raw` tables, validated against `schemas/`.

Accepted inputs: Parquet files or folders of Parquet parts (what `xpipe simulate` writes), CSV
with a header, and VOTable (what TAP services return). Values are checked before they are
written: a column of the wrong type, a required value that is null, an infinite value or a
duplicated detection key stops the load with the file, row and column named. NaN is the
VOTable null for floating-point fields, so it is stored as NULL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from xpipe.services.votable import astropy_to_arrow
from xpipe.warehouse.connection import (
    cleaned_up,
    first_row,
    only_row,
    session_setting,
    sql_literal,
    staging_name,
)
from xpipe.warehouse.contracts import (
    NUMERIC_TYPES,
    SchemaError,
    TableSchema,
    create_table,
    load_schema,
    resolve_columns,
)

INTEGER_TYPES = {"INTEGER", "SMALLINT", "BIGINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER",
                 "USMALLINT", "UTINYINT"}
FLOAT_TYPES = {"DOUBLE", "FLOAT", "REAL"}
STRING_TYPES = {"VARCHAR"}
CSV_SUFFIXES = {".csv", ".tsv", ".txt"}  # and .csv.gz

ProgressFn = Callable[[int], object]  # e.g. a tqdm bar's update


@dataclass(frozen=True)
class InputFile:
    """One file to read, with the SQL that exposes it as columns plus source_file/source_row."""

    path: Path
    relation_sql: str
    column_types: dict[str, str]
    typed: bool  # Parquet and VOTable declare types; CSV cells are text to be parsed


def expand_inputs(path: Path, pattern: str = "*.parquet") -> list[Path]:
    """A file, or the sorted data files of a folder (sorted order is the ingest order)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.match(pattern))
        if not files:
            raise SchemaError(f"{path}: folder holds no {pattern} files")
        return files
    if not path.exists():
        raise SchemaError(f"{path}: no such file or folder")
    return [path]


def open_input(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> InputFile:
    """Expose a file to DuckDB; VOTables go through astropy's parser (the one pyvo uses)."""
    suffix = path.suffix.lower()
    is_csv = suffix in CSV_SUFFIXES or path.name.endswith(".csv.gz")
    lit = sql_literal(path)
    if suffix in {".parquet", ".pq"}:
        sql = (f"SELECT *, {lit} AS source_file, file_row_number + 1 AS source_row "
               f"FROM read_parquet({lit}, file_row_number = true)")
    elif is_csv:
        read_csv(con, path, alias)
        sql = f"SELECT * EXCLUDE (__row), {lit} AS source_file, __row AS source_row FROM {alias}"
    elif suffix in {".vot", ".xml", ".votable"}:
        return open_arrow(con, read_votable(path), str(path), alias)
    else:
        raise SchemaError(f"{path}: unknown file type {suffix!r}; expected .parquet, .csv or .vot")
    try:
        described = con.execute(f"DESCRIBE {sql}").fetchall()
    except duckdb.Error as exc:
        raise SchemaError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from exc
    types = {row[0]: row[1] for row in described if row[0] not in {"source_file", "source_row",
                                                                   "file_row_number"}}
    return InputFile(path=path, relation_sql=sql, column_types=types, typed=not is_csv)


def read_csv(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    """Read a CSV once into the temporary table `alias`, its data rows numbered in `__row`.

    The row-level checks then scan the table, not the text. Row numbers are file line order
    only with a serial reader that keeps its order.
    """
    lit = sql_literal(path)
    try:
        with session_setting(con, "preserve_insertion_order", "true"):
            con.execute(f"CREATE OR REPLACE TEMP TABLE {alias} AS SELECT *, row_number() OVER () "
                        f"AS __row FROM read_csv({lit}, header = true, all_varchar = true, "
                        f"auto_detect = true, parallel = false)")
    except duckdb.Error as exc:
        raise SchemaError(csv_error(path, str(exc))) from exc
    columns = [str(row[0]) for row in con.execute(f"DESCRIBE {alias}").fetchall()]
    if len(columns) == 2:  # one column and __row: perhaps a delimiter the sniffer gave up on
        ragged = ragged_row(con, path, header=columns[0])
        if ragged:
            raise SchemaError(ragged)


CSV_DELIMITERS = (",", "\t", ";", "|")  # the candidates of DuckDB's CSV sniffer
_CSV_LINE = re.compile(r"CSV Error on Line: (\d+)")
_CSV_FIELDS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")


def _ragged_message(path: Path, line: int, expected: str, found: str) -> str:
    # The header is line 1, so data row n is line n + 1 (one line per row).
    return f"{path}, row {line - 1} (line {line}): {found} fields where the header has {expected}"


def ragged_row(con: duckdb.DuckDBPyConnection, path: Path, header: str) -> str | None:
    """The first row whose field count differs from the header's, if any.

    DuckDB's sniffer reads a file whose rows disagree in their field counts as one column of
    whole lines, which would report every column as missing. The file is scanned again with
    the delimiter the header line holds most of, keeping the rows that do not fit aside.
    """
    delimiter = max(CSV_DELIMITERS, key=header.count)
    if delimiter not in header:
        return None
    lit = sql_literal(path)
    scans, errors = "__csv_reject_scans", "__csv_reject_errors"

    def drop_rejects() -> None:
        con.execute(f"DROP TABLE IF EXISTS {errors}")
        con.execute(f"DROP TABLE IF EXISTS {scans}")

    try:
        with cleaned_up(drop_rejects):
            con.execute(f"SELECT count(*) FROM read_csv({lit}, header = true, "
                        f"all_varchar = true, delim = {sql_literal(delimiter)}, parallel = false, "
                        f"store_rejects = true, rejects_scan = '{scans}', "
                        f"rejects_table = '{errors}')").fetchall()
            row = first_row(con, f"SELECT line, error_message FROM {errors} WHERE error_type "
                                 "IN ('MISSING COLUMNS', 'TOO MANY COLUMNS') ORDER BY line LIMIT 1")
    except duckdb.Error as exc:
        raise SchemaError(csv_error(path, str(exc))) from exc
    fields = _CSV_FIELDS.search(row[1]) if row else None
    if row is None or fields is None:
        return None
    return _ragged_message(path, int(row[0]), fields[1], fields[2])


def csv_error(path: Path, error: str) -> str:
    """DuckDB's CSV error as one line naming the file (and the row, where DuckDB names one).

    DuckDB's message spans many lines: the offending line's text, the dialect it detected and
    possible fixes for its own options; only what went wrong is kept."""
    line, fields = _CSV_LINE.search(error), _CSV_FIELDS.search(error)
    if line and fields:
        return _ragged_message(path, int(line[1]), fields[1], fields[2])
    with contextlib.suppress(OSError), path.open("rb") as raw:
        if raw.read(2) == b"\x1f\x8b" and not path.name.endswith(".gz"):
            return f"{path}: cannot be read as CSV: it is gzip-compressed (name it {path.name}.gz)"
    kept = []
    for text in error.splitlines():
        if not text.strip() or text.startswith(("Possible", "The search space", "LINE ")):
            break
        if not text.startswith("Original Line:"):
            kept.append(text.strip().rstrip("."))
    return f"{path}: cannot be read as CSV: {': '.join(kept)}"


def read_votable(path: Path) -> pa.Table:
    """VOTable → Arrow, keeping masked cells as nulls (astropy marks empty TD cells masked)."""
    from astropy.io.votable import parse_single_table

    try:
        return astropy_to_arrow(parse_single_table(str(path)).to_table(use_names_over_ids=True))
    except Exception as exc:  # astropy raises many kinds for malformed XML
        raise SchemaError(f"{path}: not a readable VOTable: {exc}") from exc


def _base_type(duck_type: str) -> str:
    return duck_type.split("(")[0].upper()


def column_expression(col_name: str, target: str, *, src: str | None, src_type: str | None,
                      origin: str, typed: bool) -> str:
    """SQL turning one input column into its contract type, or an error if it cannot.

    Text is parsed only from text formats (CSV): a typed file whose numeric column arrives as
    text means the producer changed, and is reported rather than guessed at."""
    if src is None:
        return f'CAST(NULL AS {target}) AS "{col_name}"'
    quoted = '"' + src.replace('"', '""') + '"'
    base = _base_type(src_type or "")
    numeric = INTEGER_TYPES | FLOAT_TYPES | {"DECIMAL"}
    if target in STRING_TYPES:
        if base not in STRING_TYPES:
            raise SchemaError(f"{origin}: column {src!r}: expected {target} (text), "
                              f"found {src_type}")
        return f'NULLIF(trim({quoted}), \'\') AS "{col_name}"'
    if base in STRING_TYPES and not typed:  # CSV: cast checked row by row in find_bad_casts
        value = f"TRY_CAST(NULLIF(trim({quoted}), '') AS {target})"
    elif (target in FLOAT_TYPES and base in numeric) or (
            target in INTEGER_TYPES and base in INTEGER_TYPES):
        value = f"CAST({quoted} AS {target})"
    elif target in INTEGER_TYPES and base in FLOAT_TYPES | {"DECIMAL"}:
        value = f"TRY_CAST({quoted} AS {target})"  # non-integral values caught by find_bad_casts
    elif base == "NULL":
        value = f"CAST(NULL AS {target})"
    else:
        raise SchemaError(f"{origin}: column {src!r}: expected {target}, found {src_type}")
    if target in FLOAT_TYPES:
        value = f"nullif({value}, 'NaN'::DOUBLE)"  # DuckDB orders NaN equal to itself
    return f'{value} AS "{col_name}"'


# Integer types as (signed, bits): a narrower one's values all fit a wider one's.
INTEGER_WIDTHS = {"TINYINT": (True, 8), "SMALLINT": (True, 16), "INTEGER": (True, 32),
                  "BIGINT": (True, 64), "HUGEINT": (True, 128), "UTINYINT": (False, 8),
                  "USMALLINT": (False, 16), "UINTEGER": (False, 32), "UBIGINT": (False, 64)}


def fits(source: str, target: str) -> bool:
    """Every value of integer type `source` is a value of integer type `target`."""
    (src_signed, src_bits), (tgt_signed, tgt_bits) = INTEGER_WIDTHS[source], INTEGER_WIDTHS[target]
    if src_signed:
        return tgt_signed and tgt_bits >= src_bits
    return tgt_bits > src_bits if tgt_signed else tgt_bits >= src_bits


def find_bad_casts(con: duckdb.DuckDBPyConnection, inp: InputFile, schema: TableSchema,
                   mapping: dict[str, str | None]) -> None:
    """Name the first row whose text or fractional value does not fit the contract type."""
    for col in schema.columns:
        src = mapping[col.name]
        if src is None or col.type not in NUMERIC_TYPES:
            continue
        base = _base_type(inp.column_types[src])
        quoted = '"' + src.replace('"', '""') + '"'
        if base in STRING_TYPES:
            raw = f"NULLIF(trim({quoted}), '')"
            bad = f"{raw} IS NOT NULL AND TRY_CAST({raw} AS {col.type}) IS NULL"
            if col.type in INTEGER_TYPES:  # TRY_CAST rounds text: '1234.5' would be 1235
                bad = (f"({bad}) OR TRY_CAST({raw} AS DOUBLE) IS DISTINCT FROM "
                       f"TRY_CAST({raw} AS {col.type})")
        elif col.type in INTEGER_TYPES and base in FLOAT_TYPES | {"DECIMAL"}:
            bad = (f"{quoted} IS NOT NULL AND (TRY_CAST({quoted} AS {col.type}) IS NULL "
                   f"OR {quoted} <> round({quoted}))")
        elif col.type in INTEGER_TYPES and base in INTEGER_TYPES and not fits(base, col.type):
            bad = f"{quoted} IS NOT NULL AND TRY_CAST({quoted} AS {col.type}) IS NULL"
        else:
            continue
        row = first_row(con,
            f"SELECT source_row, CAST({quoted} AS VARCHAR) FROM ({inp.relation_sql}) "
            f"WHERE {bad} ORDER BY source_row LIMIT 1"
        )
        if row:
            raise SchemaError(f"{inp.path}, row {row[0]}, column {src!r}: expected {col.type}, "
                              f"found {row[1]!r}")


def value_checks(schema: TableSchema) -> list[tuple[str, str, str]]:
    """(column, SQL condition of a bad value, what is wrong) for every contract column."""
    checks = []
    for col in schema.columns:
        if not col.nullable:
            checks.append((col.name, f'"{col.name}" IS NULL', "is empty but required"))
        if col.type in FLOAT_TYPES:
            checks.append((col.name, f'isinf("{col.name}")', "is infinite"))
    return checks


def check_values(con: duckdb.DuckDBPyConnection, table: str, schema: TableSchema,
                 where: str = "TRUE") -> int:
    """Required values present and finite, all checks in one pass; returns the row count.

    Only when a check fails is the table read again, to name the first offending row.
    """
    checks = value_checks(schema)
    firsts = ", ".join(f"min(source_row) FILTER (WHERE {cond})" for _, cond, _ in checks)
    row = only_row(con, f"SELECT count(*){', ' + firsts if firsts else ''} FROM {table} "
                         f"WHERE {where}")
    for (column, condition, what), first in zip(checks, row[1:], strict=True):
        if first is not None:
            bad = only_row(con, f'SELECT source_file, source_row, CAST("{column}" AS VARCHAR) '
                                 f"FROM {table} WHERE ({where}) AND {condition} "
                                 "ORDER BY source_row LIMIT 1")
            raise SchemaError(f"{bad[0]}, row {bad[1]}, column {column!r} {what} "
                              f"(value {bad[2]!r})")
    return int(row[0])


def create_staging(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """An empty staging table with the contract's columns; returns its name."""
    staged = staging_name(table)
    con.execute(f"DROP TABLE IF EXISTS {staged}")
    create_table(con, table, name=staged)
    return staged


def append_input(con: duckdb.DuckDBPyConnection, table: str, inp: InputFile, *,
                 id_offset: int = 0, id_column: str | None = None) -> int:
    """Validate one input against `table`'s contract and append it to the staging table.

    `id_column` numbers the rows id_offset + 1, id_offset + 2, … in row order. Returns the rows
    appended; an input without rows is an error.
    """
    schema = load_schema(table)
    staged = staging_name(table)
    origin = str(inp.path)
    mapping = resolve_columns(schema, list(inp.column_types), origin)
    exprs = [column_expression(c.name, c.type, src=mapping[c.name],
                               src_type=inp.column_types.get(mapping[c.name] or ""),
                               origin=origin, typed=inp.typed)
             for c in schema.columns]
    find_bad_casts(con, inp, schema, mapping)
    generated = [f"{id_offset} + source_row AS {g.name}" if g.name == id_column else g.name
                 for g in schema.generated]
    # Parquet min/max statistics leave NaN out, and DuckDB's statistics propagation then
    # folds the NaN test to false: NaN would slip through as a value. Off for this read only.
    with session_setting(con, "disabled_optimizers", "'statistics_propagation'"):
        con.execute(f"INSERT INTO {staged} SELECT {', '.join(generated + exprs)} "
                    f"FROM ({inp.relation_sql})")
    # Rows of one input are contiguous, so zone maps on source_file keep this to one pass
    # over this input's rows.
    count = check_values(con, staged, schema, where=f"source_file = {sql_literal(origin)}")
    if count == 0:
        raise SchemaError(f"{origin}: holds no data rows")
    return count


def open_arrow(con: duckdb.DuckDBPyConnection, table: pa.Table, origin: str, alias: str
               ) -> InputFile:
    """Expose an Arrow table (a TAP result, say) like a typed file named `origin`."""
    names = set(table.column_names)
    numbered = table.append_column("__row", pa.array(np.arange(1, table.num_rows + 1)))
    con.register(alias, numbered)
    lit = sql_literal(origin)
    sql = f"SELECT * EXCLUDE (__row), {lit} AS source_file, __row AS source_row FROM {alias}"
    types = {str(row[0]): str(row[1]) for row in con.execute(f"DESCRIBE {alias}").fetchall()
             if row[0] in names}
    return InputFile(path=Path(origin), relation_sql=sql, column_types=types, typed=True)


def load_files(con: duckdb.DuckDBPyConnection, table: str, files: list[Path], *,
               progress: ProgressFn | None = None, id_column: str | None = None) -> int:
    """Build the staging table for `table` from `files`, validated; returns rows loaded.

    Call inside a transaction and swap the staging table in afterwards. `id_column` numbers the
    rows 1, 2, … in file order then row order: the stable ingest-order id.
    """
    create_staging(con, table)
    loaded = 0
    for index, path in enumerate(files):
        inp = open_input(con, path, alias=f"__input_{index}")
        count = append_input(con, table, inp, id_offset=loaded, id_column=id_column)
        loaded += count
        if progress:
            progress(count)
    return loaded


def check_unique(con: duckdb.DuckDBPyConnection, table: str, key: list[str], *, what: str,
                 where: str = "TRUE") -> None:
    """Duplicated keys are an error naming both rows: silently keeping one would hide bad input.

    NULLs in a key column group together, as for a missing `obi`. The first pass groups only
    a 64-bit hash of the key (at 10^8 detections a table of strings spills, one of integers
    much less); the few hashes seen twice are then grouped by the key itself, so a collision
    is never taken for a duplicate. Rows are looked up only for a duplicate found.
    """
    cols = ", ".join(f'"{k}"' for k in key)
    hashed = f"hash({cols})"
    seen_twice = f"SELECT {hashed} AS h FROM {table} WHERE {where} GROUP BY h HAVING count(*) > 1"
    if first_row(con, f"{seen_twice} LIMIT 1") is None:
        return
    duplicate = first_row(con, f"SELECT {cols} FROM {table} WHERE ({where}) AND {hashed} IN "
                               f"({seen_twice}) GROUP BY ALL HAVING count(*) > 1 LIMIT 1")
    if duplicate is None:
        return
    match = " AND ".join(f'"{k}" IS NOT DISTINCT FROM ?' for k in key)
    rows = con.execute(f"SELECT source_file || ' row ' || source_row FROM {table} "
                       f"WHERE {match} ORDER BY source_file, source_row LIMIT 2",
                       list(duplicate)).fetchall()
    values = ", ".join(f"{k}={v!r}" for k, v in zip(key, duplicate, strict=True))
    raise SchemaError(f"duplicate {what} ({values}) at {' and '.join(r[0] for r in rows)}")
