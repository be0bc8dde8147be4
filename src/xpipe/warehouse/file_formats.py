"""Writing a query's result to a file: CSV, Parquet, VOTable or FITS, with its provenance.

One writer serves `xpipe export`, `xpipe sql --out` and the explorer's download. Every format
but CSV carries the provenance (`FileProvenance`) in its own metadata: Parquet key-value
metadata, VOTable INFO elements, FITS header keywords. CSV has no place for metadata and gets
none: a CSV file is its header and rows, as a spreadsheet or `pandas.read_csv` expects.

Memory stays bounded at any size: CSV and Parquet are DuckDB COPY; VOTable (BINARY2) and FITS
(binary table) have fixed-width rows, so a first pass measures the row count and the longest
text, and a second streams the rows chunk by chunk. A file appears whole or not at all: it is
written under a temporary name beside the target and renamed when complete.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xpipe.core.errors import InputError
from xpipe.core.progress import progress_bar
from xpipe.warehouse.connection import cleaned_up
from xpipe.warehouse.provenance import FileProvenance

FORMATS = ("csv", "parquet", "votable", "fits")
SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".vot": "votable",
                  ".xml": "votable", ".votable": "votable", ".fits": "fits", ".fit": "fits"}
FILE_SUFFIXES = {"csv": ".csv", "parquet": ".parquet", "votable": ".vot", "fits": ".fits"}

# FileProvenance field → (Parquet key and VOTable INFO name, FITS keyword, meaning).
PROVENANCE_NAMES = {
    "xpipe_version": ("xpipe_version", "XPIPEVER", "xpipe version that wrote this file"),
    "classify_run": ("xpipe_classify_run", "CLASSRUN", "xpipe classify run of the classes"),
    "classify_finished": ("xpipe_classify_finished", "CLASSEND", "when that run ended (UTC)"),
    "model_version": ("xpipe_model_version", "MODELVER", "model version of the classes"),
    "model_hash": ("xpipe_model_hash", "MODELHSH", "SHA-256 of that model version"),
    "query": ("xpipe_query", "XPQUERY", "SQL that selected these rows"),
    "input": ("xpipe_input", "XPINPUT", "file these rows were computed from"),
}

# A column's kind: numpy type (big-endian, as both formats store it), FITS TFORM, VOTable type.
KINDS = {
    "bool": ("u1", "L", "boolean"),
    "int16": (">i2", "I", "short"),
    "int32": (">i4", "J", "int"),
    "int64": (">i8", "K", "long"),
    "float32": (">f4", "E", "float"),
    "float64": (">f8", "D", "double"),
    "text": ("S", "A", "char"),
}
INT_WIDENING = {"int16": "int32", "int32": "int64"}
ISO_DATE = "%Y-%m-%d"
ISO_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%f"

# DuckDB type → (kind, SQL turning the column into it; {} is the quoted column).
DUCKDB_TYPES = {
    "boolean": ("bool", "{}"),
    "tinyint": ("int16", "CAST({} AS SMALLINT)"),
    "utinyint": ("int16", "CAST({} AS SMALLINT)"),
    "smallint": ("int16", "{}"),
    "usmallint": ("int32", "CAST({} AS INTEGER)"),
    "integer": ("int32", "{}"),
    "uinteger": ("int64", "CAST({} AS BIGINT)"),
    "bigint": ("int64", "{}"),
    "ubigint": ("int64", "CAST({} AS BIGINT)"),  # range checked first
    "hugeint": ("int64", "CAST({} AS BIGINT)"),  # sum() of integers: range checked first
    "uhugeint": ("int64", "CAST({} AS BIGINT)"),
    "float": ("float32", "{}"),
    "double": ("float64", "{}"),
    "decimal": ("float64", "CAST({} AS DOUBLE)"),
    "varchar": ("text", "{}"),  # JSON too
    "uuid": ("text", "CAST({} AS VARCHAR)"),
    "enum": ("text", "CAST({} AS VARCHAR)"),
    "date": ("text", f"strftime({{}}, '{ISO_DATE}')"),
    "timestamp": ("text", f"strftime({{}}, '{ISO_TIMESTAMP}')"),
    "timestamp_s": ("text", f"strftime({{}}, '{ISO_TIMESTAMP}')"),
    "timestamp_ms": ("text", f"strftime({{}}, '{ISO_TIMESTAMP}')"),
    "timestamp_ns": ("text", f"strftime({{}}, '{ISO_TIMESTAMP}')"),
    "timestamp with time zone": ("text", "CAST({} AS VARCHAR)"),
    "time": ("text", "CAST({} AS VARCHAR)"),
    "interval": ("text", "CAST({} AS VARCHAR)"),
}
INT64_RANGE = (-(2**63), 2**63 - 1)

_VIEW = "__xpipe_file_rows"
_STREAM_OPEN = '<STREAM encoding="base64">'
_STREAM_CLOSE = "</STREAM>"
_BASE64_LINE = 57  # bytes per 76-character base64 line


def checked_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(f"unknown file format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def format_for(path: Path, fmt: str | None = None) -> str:
    """The format asked for, else the one the file's suffix names, else CSV."""
    return SUFFIX_FORMATS.get(path.suffix.lower(), "csv") if fmt is None else checked_format(fmt)


@dataclass(frozen=True)
class Column:
    """One output column: its name, how it is selected, and what the first pass measured."""

    name: str
    duckdb_type: str
    kind: str
    expr: str
    width: int = 0  # text: longest value in UTF-8 bytes (FITS, VOTable char) ...
    chars: int = 0  # ... and in characters (VOTable unicodeChar)
    ascii: bool = True
    nulls: bool = False
    minimum: int | None = None  # integers: to keep FITS's null marker out of the values

    @property
    def votable_unicode(self) -> bool:
        return self.kind == "text" and not self.ascii


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan_columns(relation: duckdb.DuckDBPyRelation, fmt: str) -> list[Column]:
    """Each column's kind from its DuckDB type; a type with no VOTable/FITS equivalent is an
    InputError naming the column."""
    columns, seen = [], set()
    for name, dtype in zip(relation.columns, relation.types, strict=True):
        if name in seen:
            raise InputError(f"column name {name!r} appears twice in the result: {fmt} needs "
                             "distinct names (rename one with AS)")
        seen.add(name)
        if dtype.id not in DUCKDB_TYPES:
            raise InputError(
                f"column {name!r} is {dtype}, which {fmt} cannot hold: a {fmt} column holds "
                "one number, text or boolean per row; select or cast it (CAST(... AS VARCHAR), "
                "x[1], s.field), or write Parquet")
        kind, template = DUCKDB_TYPES[dtype.id]
        columns.append(Column(name, str(dtype), kind, template.format(_quoted(name))))
    return columns


def _measures(column: Column) -> list[str]:
    source = _quoted(column.name)
    parts = [f"count({source})"]
    if column.kind == "text":
        parts += [f"max(strlen({column.expr}))", f"max(length({column.expr}))",
                  f"coalesce(bool_and(strlen({column.expr}) = length({column.expr})), true)"]
    elif column.kind.startswith("int"):
        parts += [f"min({source})", f"max({source})"]
    return parts


def measure(con: duckdb.DuckDBPyConnection, columns: list[Column]
            ) -> tuple[int, list[Column]]:
    """The row count, and each column with its nulls, text widths and integer range."""
    parts = [p for c in columns for p in _measures(c)]
    row = con.execute(f"SELECT count(*){''.join(', ' + p for p in parts)} FROM {_VIEW}"
                      ).fetchall()[0]
    rows, values = int(row[0]), list(row[1:])
    measured = []
    for column in columns:
        count, *rest = values[:len(_measures(column))]
        del values[:len(_measures(column))]
        column = replace(column, nulls=count < rows)
        if column.kind == "text":
            width, chars, ascii = int(rest[0] or 0), int(rest[1] or 0), bool(rest[2])
            column = replace(column, width=max(width, 1), chars=max(chars, 1), ascii=ascii)
        elif column.kind.startswith("int"):
            low, high = rest
            if low is not None and (low < INT64_RANGE[0] or high > INT64_RANGE[1]):
                raise InputError(f"column {column.name!r} ({column.duckdb_type}) holds values "
                                 f"from {low} to {high}, beyond the 64-bit integers files hold; "
                                 "cast it to DOUBLE or write Parquet")
            column = replace(column, minimum=None if low is None else int(low))
        measured.append(column)
    return rows, measured


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation
                ) -> Iterator[None]:
    """The relation as a view for the writer's own statements (the user's SQL is not pasted)."""
    con.register(_VIEW, relation)
    with cleaned_up(lambda: con.unregister(_VIEW)):
        yield


@contextmanager
def _whole_or_nothing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed to it when the block ends without error."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_result(con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, path: Path,
                 fmt: str, provenance: FileProvenance, *, chunk_rows: int = 100_000,
                 header: bool = True) -> None:
    """Write `relation`'s rows, in its order, to `path` in format `fmt` with `provenance` in
    the file's metadata (none in CSV). `header` is CSV's column-name line."""
    fmt = format_for(path, fmt)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: no folder {path.parent}")
    with _registered(con, relation), _whole_or_nothing(path) as target:
        if fmt == "csv":
            con.execute(f"COPY (SELECT * FROM {_VIEW}) TO $1 (FORMAT csv, HEADER $2)",
                        [str(target), header])
        elif fmt == "parquet":
            metadata = {PROVENANCE_NAMES[k][0]: v for k, v in provenance.items()}
            con.execute(f"COPY (SELECT * FROM {_VIEW}) TO $1 (FORMAT parquet, KV_METADATA $2)",
                        [str(target), metadata])
        else:
            rows, columns = measure(con, plan_columns(relation, fmt))
            write = _write_fits if fmt == "fits" else _write_votable
            write(target, _batches(con, columns, rows, chunk_rows, path), rows, columns,
                  provenance)


def _batches(con: duckdb.DuckDBPyConnection, columns: list[Column], rows: int,
             chunk_rows: int, path: Path) -> Iterator[pa.RecordBatch]:
    """The second pass, checked against the first: a query whose rows change between runs
    (random(), USING SAMPLE without a seed) cannot fill a fixed-width file."""
    select = ", ".join(f"{c.expr} AS {_quoted(c.name)}" for c in columns)
    done = 0
    with con.sql(f"SELECT {select} FROM {_VIEW}").to_arrow_reader(batch_size=chunk_rows) \
            as reader, progress_bar(f"writing {path.name}", total=rows) as bar:
        for batch in reader:
            done += batch.num_rows
            if done > rows or any(_outgrown(batch.column(i), c) for i, c in enumerate(columns)):
                raise InputError(_changed(rows))
            yield batch
            bar.update(batch.num_rows)
    if done != rows:
        raise InputError(_changed(rows))


def _outgrown(array: pa.Array, column: Column) -> bool:
    """Text longer, or less ASCII, than the first pass measured."""
    if column.kind != "text" or array.null_count == len(array):
        return False
    return (pc.max(pc.binary_length(array)).as_py() > column.width
            or pc.max(pc.utf8_length(array)).as_py() > column.chars
            or (column.ascii and not pc.all(pc.string_is_ascii(array)).as_py()))


def _changed(rows: int) -> str:
    return (f"the query gave other rows on its second run than the {rows:,} measured on its "
            "first (random() or USING SAMPLE without REPEATABLE?): VOTable and FITS read the "
            "result twice; make it repeatable or write Parquet")


# --- values ------------------------------------------------------------------------------------

def _numbers(array: pa.Array, column: Column, fill: float | int) -> np.ndarray:
    filled = pc.fill_null(array, pa.scalar(fill, array.type)) if array.null_count else array
    return np.asarray(filled.to_numpy(zero_copy_only=False)).astype(KINDS[column.kind][0])


def _utf8(array: pa.Array, width: int) -> np.ndarray:
    filled = pc.fill_null(array, "") if array.null_count else array
    return np.asarray(filled.cast(pa.binary()).to_numpy(zero_copy_only=False), dtype=f"S{width}")


def _ucs2(array: pa.Array, column: Column) -> np.ndarray:
    """VOTable unicodeChar: UCS-2 big-endian, `chars` code units, zero-padded."""
    filled = pc.fill_null(array, "") if array.null_count else array
    points = np.asarray(filled.to_numpy(zero_copy_only=False), dtype=f"U{column.chars}")
    codes = points.view(np.uint32).reshape(len(points), column.chars)
    if (codes > 0xFFFF).any():
        raise InputError(f"column {column.name!r} holds characters beyond Unicode's Basic "
                         "Multilingual Plane (emoji, ...), which VOTable's unicodeChar (UCS-2) "
                         "cannot store; write Parquet or FITS")
    return codes.astype(">u2")


def _bool_bytes(array: pa.Array, true: bytes, false: bytes, null: bytes) -> np.ndarray:
    values = pc.fill_null(array, False).to_numpy(zero_copy_only=False)
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    return np.where(nulls, ord(null), np.where(values, ord(true), ord(false))).astype("u1")


# --- FITS ----------------------------------------------------------------------------------------

def _fits_null(column: Column) -> tuple[Column, int | None]:
    """FITS marks a null integer with a value (TNULL): the type's minimum, widened to the next
    type where a real value is that minimum."""
    if not (column.nulls and column.kind.startswith("int")):
        return column, None
    while column.minimum == np.iinfo(KINDS[column.kind][0]).min:
        if column.kind not in INT_WIDENING:
            raise InputError(f"column {column.name!r} holds both NULLs and -2**63, the only "
                             "value FITS could mark its nulls with; write Parquet or VOTable")
        column = replace(column, kind=INT_WIDENING[column.kind])
    return column, int(np.iinfo(KINDS[column.kind][0]).min)


def _fits_header(rows: int, columns: list[tuple[Column, int | None]],
                 provenance: FileProvenance) -> Any:
    from astropy.io import fits

    fits_columns = []
    for column, null in columns:
        if not column.name.isascii():
            raise InputError(f"column name {column.name!r} is not ASCII, which FITS column "
                             "names must be; rename it with AS")
        tform = KINDS[column.kind][1]
        fits_columns.append(fits.Column(name=column.name, null=null, format=(
            f"{column.width}A" if column.kind == "text" else tform)))
    header = fits.BinTableHDU.from_columns(fits_columns, nrows=0).header
    header["NAXIS2"] = rows
    for field, value in provenance.items():
        _, keyword, meaning = PROVENANCE_NAMES[field]
        header.append(_fits_card(keyword, value, meaning))
    return header


def _fits_card(keyword: str, value: str, comment: str) -> Any:
    """A header card; FITS text is printable ASCII, so anything else is written as a Python
    escape (\\n, \\xe9); a comment that would not fit beside its value is left out."""
    from astropy.io import fits

    if not (value.isascii() and value.isprintable()):
        value = value.encode("unicode_escape").decode("ascii")
    quoted = max(len(value) + value.count("'"), 8) + 2  # astropy pads short text to 8 ...
    fits_on_card = 10 + max(quoted, 20) + 3 + len(comment) <= 80  # ... and the value to 20
    fits_on_card |= quoted > 70  # long text goes on CONTINUE cards, the comment on the last
    return fits.Card(keyword, value, comment if fits_on_card else "")


def _fits_rows(batch: pa.RecordBatch, columns: list[tuple[Column, int | None]]) -> np.ndarray:
    dtype = [(f"f{i}", f"S{c.width}" if c.kind == "text" else KINDS[c.kind][0])
             for i, (c, _) in enumerate(columns)]
    rows = np.empty(batch.num_rows, dtype=dtype)
    for i, (column, null) in enumerate(columns):
        array = batch.column(i)
        if column.kind == "text":
            rows[f"f{i}"] = _utf8(array, column.width)
        elif column.kind == "bool":
            rows[f"f{i}"] = _bool_bytes(array, b"T", b"F", b"\0")
        else:
            fill = np.nan if column.kind.startswith("float") else (null or 0)
            rows[f"f{i}"] = _numbers(array, column, fill)
    return rows


def _write_fits(target: Path, batches: Iterator[pa.RecordBatch], rows: int,
                columns: list[Column], provenance: FileProvenance) -> None:
    """A primary HDU and one binary table, streamed (astropy's StreamingHDU)."""
    from astropy.io import fits

    with_nulls = [_fits_null(c) for c in columns]
    stream = fits.StreamingHDU(str(target), _fits_header(rows, with_nulls, provenance))
    for batch in batches:
        stream.write(_fits_rows(batch, with_nulls).view(np.uint8))
    stream.close()


# --- VOTable -------------------------------------------------------------------------------------

def _votable_envelope(columns: list[Column], provenance: FileProvenance) -> tuple[str, str]:
    """The XML before and after the BINARY2 stream, written by astropy: fields and INFOs."""
    from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile

    votable = VOTableFile(version="1.4")
    resource = Resource(type="results")
    votable.resources.append(resource)
    for field, value in provenance.items():
        name, _, meaning = PROVENANCE_NAMES[field]
        info = Info(name=name, value=value)
        info.content = meaning
        resource.infos.append(info)
    table = TableElement(votable)
    resource.tables.append(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # W03: astropy makes an ID from a name such as 'TTau*'
        for column in columns:
            datatype = "unicodeChar" if column.votable_unicode else KINDS[column.kind][2]
            arraysize = (str(column.chars if column.votable_unicode else column.width)
                         if column.kind == "text" else None)
            table.fields.append(Field(votable, name=column.name, datatype=datatype,
                                      arraysize=arraysize))
        table.create_arrays(1)  # astropy writes no DATA element for an empty table
        text = io.BytesIO()
        votable.to_xml(text, tabledata_format="binary2")
    xml = text.getvalue().decode("utf-8")
    start, end = xml.index(_STREAM_OPEN) + len(_STREAM_OPEN), xml.index(_STREAM_CLOSE)
    return xml[:start] + "\n", xml[end:]


def _votable_rows(batch: pa.RecordBatch, columns: list[Column]) -> np.ndarray:
    """BINARY2 rows: a null flag per column (most significant bit first), then the values."""
    flags = (len(columns) + 7) // 8
    dtype: list[tuple[str, Any] | tuple[str, Any, Any]] = [("nulls", "u1", (flags,))]
    for i, c in enumerate(columns):
        if c.votable_unicode:
            dtype.append((f"f{i}", ">u2", (c.chars,)))
        else:
            dtype.append((f"f{i}", f"S{c.width}" if c.kind == "text" else KINDS[c.kind][0]))
    rows = np.empty(batch.num_rows, dtype=dtype)
    nulls = np.zeros((batch.num_rows, flags * 8), dtype=bool)
    for i, column in enumerate(columns):
        array = batch.column(i)
        nulls[:, i] = array.is_null().to_numpy(zero_copy_only=False)
        if column.votable_unicode:
            rows[f"f{i}"] = _ucs2(array, column)
        elif column.kind == "text":
            rows[f"f{i}"] = _utf8(array, column.width)
        elif column.kind == "bool":
            rows[f"f{i}"] = _bool_bytes(array, b"T", b"F", b"?")
        else:
            rows[f"f{i}"] = _numbers(array, column, np.nan if "float" in column.kind else 0)
    rows["nulls"] = np.packbits(nulls, axis=1, bitorder="big")
    return rows


def _write_votable(target: Path, batches: Iterator[pa.RecordBatch], rows: int,
                   columns: list[Column], provenance: FileProvenance) -> None:
    """One RESOURCE with the provenance INFOs and one TABLE, its rows as a BINARY2 stream."""
    head, tail = _votable_envelope(columns, provenance)
    with target.open("wb") as out:
        out.write(head.encode("utf-8"))
        pending = b""
        for batch in batches:
            pending += _votable_rows(batch, columns).tobytes()
            whole = len(pending) - len(pending) % _BASE64_LINE
            out.write(base64.encodebytes(pending[:whole]))
            pending = pending[whole:]
        out.write(base64.encodebytes(pending))
        out.write(tail.encode("utf-8"))
