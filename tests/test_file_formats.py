"""VOTable and FITS (and Parquet, CSV) files from one writer: astropy reads back the rows and
columns DuckDB returned, and every format but CSV carries the classification's provenance."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.io.votable import parse
from astropy.table import Table
from science_fixtures import classified_copy

from xpipe import __version__
from xpipe.core.errors import InputError
from xpipe.predict.export import published_queries
from xpipe.warehouse.file_formats import FILE_SUFFIXES, PROVENANCE_NAMES, write_result
from xpipe.warehouse.provenance import NOT_CLASSIFIED, FileProvenance, file_provenance

# Every DuckDB type the writer maps, with NULLs, non-ASCII text, NaN and FITS's integer null
# marker (-2**31 beside a NULL: the column is widened to 64 bits).
ALL_TYPES = """
SELECT * FROM (VALUES
  (true, 1::TINYINT, 200::UTINYINT, -5::SMALLINT, 7, -2147483648, 2::BIGINT,
   12345678901234::HUGEINT, 1.5::FLOAT, 0.1::DOUBLE, 3.25::DECIMAL(5,2), 'plain',
   'Orion±é', DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05.123456', '{"a": 1}'::JSON,
   'b'::ENUM('a', 'b')),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL),
  (false, -1::TINYINT, 0::UTINYINT, 5::SMALLINT, -7, 3, -2::BIGINT, -1::HUGEINT,
   'nan'::FLOAT, -2.5e300::DOUBLE, -1.00::DECIMAL(5,2), '', 'ÅŘ', DATE '1999-12-31',
   TIMESTAMP '1999-12-31 23:59:59', '[]'::JSON, 'a'::ENUM('a', 'b'))
) t(flag, tiny, utiny, small, int, int_marker, big, huge, single, double, dec, text, unicode,
    day, moment, doc, label)
"""


def _expected(value: Any) -> Any:
    """What a DuckDB value becomes in VOTable and FITS: times as ISO 8601 text, decimals as
    doubles, NaN as a null."""
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


def read_back(path: Path, fmt: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows as astropy reads them (Parquet: pyarrow, since astropy's reader
    fails on null text), masked cells as None."""
    if fmt == "parquet":
        arrow = pq.read_table(path)
        return arrow.column_names, [tuple(map(_plain, r.values())) for r in arrow.to_pylist()]
    with warnings.catch_warnings():
        # VOTable: W03 on names such as 'TTau*'; FITS: "NULL (undefined) values ... False"
        warnings.simplefilter("ignore")
        table = (Table.read(path, format="votable", use_names_over_ids=True)
                 if fmt == "votable" else Table.read(path, format=fmt))
    columns = [np.ma.getdata(table[c]).tolist() for c in table.colnames]
    masks = [np.ma.getmaskarray(table[c]).tolist() for c in table.colnames]
    rows = [tuple(None if m[i] else _plain(col[i]) for col, m in zip(columns, masks,
                                                                     strict=True))
            for i in range(len(table))]
    return list(table.colnames), rows


def _is_text(dtype: duckdb.DuckDBPyType) -> bool:
    return dtype.id in ("varchar", "date", "timestamp", "enum")


def expected_rows(con: duckdb.DuckDBPyConnection, query: str, fmt: str) -> list[tuple]:
    """DuckDB's rows as astropy reads each format: VOTable text NULL as '' (astropy ignores
    BINARY2's flag on text), FITS text NULL and '' both masked (FITS text has no null), a NULL
    FITS boolean as False."""
    relation = con.sql(query)
    if fmt not in ("votable", "fits"):
        return [tuple(map(_plain, row)) for row in relation.fetchall()]
    text = [_is_text(t) for t in relation.types]
    boolean = [t.id == "boolean" for t in relation.types]
    rows = []
    for row in relation.fetchall():
        values = []
        for value, is_text, is_bool in zip(map(_expected, row), text, boolean, strict=True):
            if is_text and fmt == "votable":
                value = "" if value is None else value
            elif is_text:
                value = None if value == "" else value
            elif is_bool and fmt == "fits":
                value = False if value is None else value
            values.append(value)
        rows.append(tuple(values))
    return rows


def assert_reads_back(con: duckdb.DuckDBPyConnection, query: str, path: Path, fmt: str
                      ) -> None:
    columns, rows = read_back(path, fmt)
    assert columns == con.sql(query).columns
    assert rows == expected_rows(con, query, fmt)


PROVENANCE = FileProvenance("9.9.9", "run-1", "2024-01-01T00:00:00Z", "run-1", "ab" * 32,
                            query="SELECT 'é'\n  FROM x -- it's")


@pytest.mark.parametrize("fmt", ["votable", "fits", "parquet"])
def test_every_type_reads_back_with_its_nulls(tmp_path: Path, fmt: str) -> None:
    con = duckdb.connect()
    path = tmp_path / f"all{FILE_SUFFIXES[fmt]}"
    write_result(con, con.sql(ALL_TYPES), path, fmt, PROVENANCE)
    assert_reads_back(con, ALL_TYPES, path, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_fits_layout_nulls_and_types(tmp_path: Path) -> None:
    """Integers keep their width with TNULL only where there are NULLs; a column whose values
    include the marker is widened; text is fixed-width (longest value, UTF-8 bytes)."""
    con = duckdb.connect()
    path = tmp_path / "all.fits"
    write_result(con, con.sql(ALL_TYPES), path, "fits", PROVENANCE)
    with fits.open(path) as hdus:
        columns = {c.name: c for c in hdus[1].columns}
    assert {n: c.format for n, c in columns.items() if n in ("flag", "tiny", "utiny", "int",
                                                            "int_marker", "huge", "single",
                                                            "double", "dec", "text", "unicode",
                                                            "moment")} == {
        "flag": "L", "tiny": "I", "utiny": "I", "int": "J", "int_marker": "K", "huge": "K",
        "single": "E", "double": "D", "dec": "D", "text": "5A", "unicode": "9A",
        "moment": "26A"}
    assert columns["int"].null == -(2**31) and columns["int_marker"].null == -(2**63)
    write_result(con, con.sql("SELECT 1 AS n"), path, "fits", PROVENANCE)
    with fits.open(path) as hdus:
        assert hdus[1].columns["n"].null is None  # no NULLs: no marker


def test_votable_text_nulls_are_flagged(tmp_path: Path) -> None:
    """astropy ignores BINARY2's null flags on text (its issue 8995), so read the flags here:
    one flag byte, then a 4-byte int and 2 bytes of text per row."""
    con = duckdb.connect()
    path = tmp_path / "t.vot"
    query = "SELECT * FROM (VALUES (1, 'ab'), (NULL, NULL), (3, '')) t(n, s)"
    write_result(con, con.sql(query), path, "votable", PROVENANCE)
    text = path.read_text()
    stream = re.search(r'<STREAM encoding="base64">(.*?)</STREAM>', text, re.S)
    assert stream is not None
    raw = base64.b64decode(stream.group(1))
    assert len(raw) == 3 * 7
    assert [raw[i * 7] for i in range(3)] == [0b00000000, 0b11000000, 0b00000000]
    assert [raw[i * 7 + 5:i * 7 + 7] for i in range(3)] == [b"ab", b"\0\0", b"\0\0"]


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_chunk_size_does_not_change_the_file(tmp_path: Path, fmt: str) -> None:
    con = duckdb.connect()
    query = ("SELECT range AS i, range / 7 AS x, repeat('ab', (range % 5)::INT) AS s, "
             "CASE WHEN range % 3 = 0 THEN NULL ELSE range END AS n FROM range(2503)")
    files = []
    for chunk_rows in (1, 7, 1000, 100_000):
        path = tmp_path / f"{chunk_rows}{FILE_SUFFIXES[fmt]}"
        write_result(con, con.sql(query), path, fmt, PROVENANCE, chunk_rows=chunk_rows)
        files.append(path.read_bytes())
    assert all(f == files[0] for f in files[1:])
    assert_reads_back(con, query, tmp_path / f"7{FILE_SUFFIXES[fmt]}", fmt)


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_an_empty_result_keeps_its_columns(tmp_path: Path, fmt: str) -> None:
    con = duckdb.connect()
    path = tmp_path / f"e{FILE_SUFFIXES[fmt]}"
    query = "SELECT 1 AS a, 'x' AS b, 2.5 AS c WHERE false"
    write_result(con, con.sql(query), path, fmt, PROVENANCE)
    assert read_back(path, fmt) == (["a", "b", "c"], [])


@pytest.mark.parametrize(("query", "message"), [
    ("SELECT [1, 2] AS pair", "column 'pair' is INTEGER[]"),
    ("SELECT {'x': 1} AS s", "column 's' is STRUCT"),
    ("SELECT 1 AS a, 2 AS a", "column name 'a' appears twice"),
    ("SELECT 170141183460469231731687303715884105727::HUGEINT AS big",
     "column 'big' (HUGEINT) holds values"),
])
@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_what_a_format_cannot_hold_is_refused(tmp_path: Path, fmt: str, query: str,
                                              message: str) -> None:
    con = duckdb.connect()
    with pytest.raises(InputError, match=re.escape(message)):
        write_result(con, con.sql(query), tmp_path / "x.out", fmt, PROVENANCE)
    assert list(tmp_path.iterdir()) == []


CHANGES = {"longer text": {"width": -1}, "more characters": {"chars": -1},
           "non-ASCII text": {"ascii": True}}


@pytest.mark.parametrize("change", ["more rows", "fewer rows", *CHANGES])
@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_a_result_that_changes_between_passes_is_refused_and_nothing_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, change: str) -> None:
    """A query whose rows differ from one run to the next (random(), USING SAMPLE without a
    seed) cannot fill the layout its first run measured: the first pass is made to measure
    something else than the second reads."""
    from xpipe.warehouse import file_formats

    measure = file_formats.measure

    def other_first_pass(con, columns):
        rows, measured = measure(con, columns)
        if change in CHANGES:
            text = measured[1]
            changed = {k: v if isinstance(v, bool) else getattr(text, k) + v
                       for k, v in CHANGES[change].items()}
            return rows, [measured[0], replace(text, **changed)]
        return rows + (-1 if change == "more rows" else 1), measured

    monkeypatch.setattr(file_formats, "measure", other_first_pass)
    con = duckdb.connect()
    query = ("SELECT range AS i, CASE WHEN range = 4 THEN 'ééé' ELSE repeat('x', range::INT) "
             "END AS s FROM range(5)")
    with pytest.raises(InputError, match="other rows on its second run"):
        write_result(con, con.sql(query), tmp_path / "x.out", fmt, PROVENANCE, chunk_rows=2)
    assert list(tmp_path.iterdir()) == []


def _metadata(path: Path, fmt: str) -> dict[str, str]:
    """The provenance as each format stores it, by FileProvenance field."""
    if fmt == "parquet":
        stored = {k.decode(): v.decode() for k, v in pq.read_metadata(path).metadata.items()}
        return {f: stored[key] for f, (key, _, _) in PROVENANCE_NAMES.items() if key in stored}
    if fmt == "votable":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # W03 on names such as 'TTau*'
            infos = {i.name: i.value for i in parse(path).resources[0].infos}
        return {f: infos[key] for f, (key, _, _) in PROVENANCE_NAMES.items() if key in infos}
    header = fits.getheader(path, 1)
    return {f: header[keyword] for f, (_, keyword, _) in PROVENANCE_NAMES.items()
            if keyword in header}


@pytest.mark.parametrize("fmt", ["parquet", "votable", "fits"])
def test_provenance_in_each_format(tmp_path: Path, fmt: str) -> None:
    con = duckdb.connect()
    path = tmp_path / f"p{FILE_SUFFIXES[fmt]}"
    write_result(con, con.sql("SELECT 1 AS a"), path, fmt, PROVENANCE)
    stored = _metadata(path, fmt)
    expected = dict(PROVENANCE.items())
    if fmt == "votable":  # XML turns a line break inside an attribute into a space
        expected["query"] = expected["query"].replace("\n", " ")
    if fmt == "fits":  # FITS text is printable ASCII: the rest is escaped
        stored["query"] = stored["query"].encode("ascii").decode("unicode_escape")
    assert stored == expected


def test_csv_is_only_its_rows(tmp_path: Path) -> None:
    con = duckdb.connect()
    write_result(con, con.sql("SELECT 1 AS a, 'x' AS b"), tmp_path / "p.csv", "csv", PROVENANCE)
    assert (tmp_path / "p.csv").read_text() == "a,b\n1,x\n"


# --- a classified warehouse --------------------------------------------------------------------

@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classified_copy(tmp_path_factory, "formats")


def _classification(warehouse: Path) -> dict[str, str]:
    """The stored classification as meta.runs and model.versions record it."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        run, finished = con.execute(
            "SELECT run_id, strftime(finished_at, '%Y-%m-%dT%H:%M:%SZ') FROM meta.runs "
            "WHERE command = 'classify' AND status = 'ok' ORDER BY started_at DESC LIMIT 1"
        ).fetchall()[0]
        version, content_hash = con.execute(
            "SELECT version, content_hash FROM model.versions WHERE run_id = ?", [run]
        ).fetchall()[0]
    return {"xpipe_version": __version__, "classify_run": run, "classify_finished": finished,
            "model_version": version, "model_hash": content_hash}


@pytest.mark.parametrize("fmt", ["votable", "fits", "parquet"])
def test_export_reads_back_with_the_classification_provenance(classified: Path, cli,
                                                              tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "export"
    result = cli("--warehouse", str(classified), "export", "--out", str(out), "--format", fmt)
    classification = _classification(classified)
    with duckdb.connect(str(classified), read_only=True) as con:
        for name, query in published_queries().items():
            path = out / f"{name}{FILE_SUFFIXES[fmt]}"
            assert str(path) in result.output
            assert_reads_back(con, query, path, fmt)
            assert _metadata(path, fmt) == {**classification, "query": query}


def test_sql_out_names_the_format_by_suffix_and_says_when_nothing_is_classified(
        loaded: Path, cli, tmp_path: Path) -> None:
    query = "SELECT name, obsid, hard_hm FROM raw.detections ORDER BY obsid"
    formats = {".vot": "votable", ".xml": "votable", ".fit": "fits", ".pq": "parquet"}
    for suffix in formats:
        cli("--warehouse", str(loaded), "sql", "--out", str(tmp_path / f"out{suffix}"), query)
    with duckdb.connect(str(loaded), read_only=True) as con:
        for suffix, fmt in formats.items():
            assert_reads_back(con, query, tmp_path / f"out{suffix}", fmt)
            assert _metadata(tmp_path / f"out{suffix}", fmt) == {
                "xpipe_version": __version__, "classify_run": NOT_CLASSIFIED,
                "classify_finished": NOT_CLASSIFIED, "model_version": NOT_CLASSIFIED,
                "model_hash": NOT_CLASSIFIED, "query": query}
        assert file_provenance(con).classify_run == NOT_CLASSIFIED
    cli("--warehouse", str(loaded), "sql", "--out", str(tmp_path / "x.fits"), "--format",
        "votable", query)
    assert parse(tmp_path / "x.fits").get_first_table().array.shape == (40,)  # --format wins
    result = cli("--warehouse", str(loaded), "sql", "--format", "fits", query, expect_ok=False)
    assert result.exit_code == 2 and "--format fits needs --out FILE" in result.output


def test_sql_out_refuses_a_list_column_by_name(loaded: Path, cli, tmp_path: Path) -> None:
    result = cli("--warehouse", str(loaded), "sql", "--out", str(tmp_path / "x.fits"),
                 "SELECT name, [obsid, obi] AS ids FROM raw.detections", expect_ok=False)
    assert result.exit_code == 1
    assert "Error: column 'ids' is INTEGER[]" in result.output and "write Parquet" in result.output
    assert not (tmp_path / "x.fits").exists()
