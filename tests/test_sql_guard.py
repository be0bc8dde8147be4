"""`xpipe sql` is read-only for real: every write vector a hostile user could try is refused
before anything runs, no file appears, and every warehouse file stays byte-identical."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from xpipe.core.config import Settings
from xpipe.warehouse.user_sql import UserQueryError, open_guarded, read_statements


def _make_warehouse(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA raw; CREATE SCHEMA results")
    con.execute("CREATE TABLE raw.detections AS SELECT 'src' || (range % 7) AS name, "
                "range::INTEGER AS obsid, range / 10.0 AS hard_hm FROM range(?)", [rows])
    con.execute("CREATE TABLE results.source_class AS SELECT DISTINCT name, 'AGN' AS "
                "agg_master_class FROM raw.detections")
    con.close()


def _tree(root: Path) -> dict[str, str]:
    """Every file under root (links followed as files) with its SHA-256."""
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the warehouse, a second warehouse and a hard link to it."""
    _make_warehouse(tmp_path / "wh" / "xpipe.duckdb", 50)
    _make_warehouse(tmp_path / "other.duckdb", 30)
    os.link(tmp_path / "wh" / "xpipe.duckdb", tmp_path / "alias.duckdb")
    (tmp_path / "mine.csv").write_text("name,note\nsrc1,hello\nsrc2,world\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XPIPE_WAREHOUSE", str(tmp_path / "wh" / "xpipe.duckdb"))
    return tmp_path


WRITE_VECTORS = {
    "copy to a file": "COPY (SELECT 1) TO 'x.csv'",
    "copy a table": "COPY raw.detections TO 'x.parquet' (FORMAT parquet)",
    "copy onto another warehouse": "COPY raw.detections TO 'other.duckdb'",
    "copy from a file": "COPY raw.detections FROM 'mine.csv'",
    "attach read-write and drop": "ATTACH 'other.duckdb' AS p (READ_WRITE); "
                                  "DROP TABLE p.raw.detections",
    "attach the same file by another path": "ATTACH 'wh/../wh/xpipe.duckdb' AS p; "
                                            "DROP TABLE p.raw.detections",
    "attach a hard link": "ATTACH 'alias.duckdb' AS p (READ_WRITE); DELETE FROM p.raw.detections",
    "attach a new database": "ATTACH 'new.duckdb' AS n; CREATE TABLE n.t AS SELECT 1",
    "attach in-memory": "ATTACH ':memory:' AS m",
    "detach": "DETACH xpipe",
    "a read then a write": "SELECT 1; COPY (SELECT 1) TO 'x.csv'",
    "a write hidden after a comment": "SELECT 1 /* ; */; COPY (SELECT 2) TO 'x.csv' -- read",
    "export database": "EXPORT DATABASE 'dump'",
    "import database": "IMPORT DATABASE 'dump'",
    "install an extension": "INSTALL httpfs",
    "load an extension": "LOAD httpfs",
    "update extensions": "UPDATE EXTENSIONS",
    "unlock the configuration": "SET lock_configuration = false",
    "reset the lock": "RESET lock_configuration",
    "turn autoload back on": "SET autoload_known_extensions = true",
    "profiler output file": "SET profiling_output = 'prof.json'; PRAGMA enable_profiling; "
                            "SELECT 1",
    "pragma profiling": "PRAGMA enable_profiling = 'json'",
    "log queries to a file": "SET log_query_path = 'log.sql'; SELECT 1",
    "temp directory elsewhere": "SET temp_directory = 'spill'",
    "use another catalog": "USE memory",
    "set a variable": "SET VARIABLE x = 1",
    "checkpoint": "CHECKPOINT",
    "force checkpoint": "FORCE CHECKPOINT",
    "call checkpoint": "CALL checkpoint()",
    "vacuum": "VACUUM",
    "analyze": "ANALYZE",
    "create table": "CREATE TABLE t AS SELECT 1",
    "create temp table": "CREATE TEMP TABLE t AS SELECT 1",
    "create view": "CREATE VIEW v AS SELECT 1",
    "create macro": "CREATE MACRO m() AS 1",
    "create secret": "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "create persistent secret": "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "insert": "INSERT INTO results.source_class VALUES ('x', 'YSO')",
    "update": "UPDATE results.source_class SET agg_master_class = 'XB'",
    "delete": "DELETE FROM results.source_class",
    "truncate": "TRUNCATE results.source_class",
    "drop": "DROP TABLE results.source_class",
    "alter": "ALTER TABLE results.source_class ADD COLUMN x INTEGER",
    "comment on": "COMMENT ON TABLE results.source_class IS 'x'",
    "merge": "MERGE INTO results.source_class USING (SELECT 'x' AS name) s USING (name) "
             "WHEN MATCHED THEN DELETE",
    "begin a transaction": "BEGIN TRANSACTION",
    "prepare": "PREPARE p AS SELECT 1",
    "execute": "EXECUTE p",
    "explain analyze of a write": "EXPLAIN ANALYZE DELETE FROM results.source_class",
    "explain analyze of a copy": "EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'",
    "explain with options of a write": "EXPLAIN (FORMAT json) INSERT INTO results.source_class "
                                       "VALUES ('x', 'y')",
    "pivot creating a type": "PIVOT results.source_class ON agg_master_class USING count(*)",
}

# Statements that parse as reads but would write or reach out if DuckDB allowed them at run time.
RUNTIME_VECTORS = {
    "query() of a copy": "SELECT * FROM query('COPY (SELECT 1) TO ''x.csv''')",
    "query() of an attach": "SELECT * FROM query('ATTACH ''other.duckdb'' AS p')",
    "an extension autoloaded by a URL": "SELECT * FROM 'https://example.org/x.parquet'",
    "an extension autoloaded by a function": "SELECT * FROM read_xlsx('x.xlsx')",
}


def _refused(cli, query: str, *extra: str) -> str:
    result = cli("sql", query, *extra, expect_ok=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("query", WRITE_VECTORS.values(), ids=WRITE_VECTORS.keys())
def test_write_vector_refused_before_anything_runs(site: Path, cli, query: str) -> None:
    before = _tree(site)
    output = _refused(cli, query)
    assert "read-only" in output and "nothing was run" in output
    assert _tree(site) == before


@pytest.mark.parametrize("query", RUNTIME_VECTORS.values(), ids=RUNTIME_VECTORS.keys())
def test_runtime_vector_fails_without_effect(site: Path, cli, query: str) -> None:
    before = _tree(site)
    _refused(cli, query)
    assert _tree(site) == before


def test_refusal_names_the_statement(site: Path, cli) -> None:
    output = _refused(cli, "SELECT 1; SELECT 2; ATTACH 'other.duckdb' AS p")
    assert "statement 3 is ATTACH" in output
    assert "statement 1 is COPY" in _refused(cli, "COPY (SELECT 1) TO 'x.csv'")
    assert "EXPLAIN of DELETE" in _refused(cli, "EXPLAIN ANALYZE DELETE FROM raw.detections")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "votable", "fits"])
def test_out_cannot_be_injected(site: Path, cli, fmt: str) -> None:
    """The query used to be pasted into `COPY (<query>) TO ...`: closing the parenthesis let it
    choose its own target and options."""
    before = _tree(site)
    evil = "SELECT 1) TO 'evil.csv' (FORMAT csv); --"
    _refused(cli, evil, "--format", fmt, "--out", "out." + fmt)
    _refused(cli, "SELECT 1 AS a) TO 'other.duckdb' (FORMAT csv); SELECT (1", "--out", "o.csv")
    assert _tree(site) == before


@pytest.mark.parametrize("target", ["wh/xpipe.duckdb", "alias.duckdb", "other.duckdb"])
def test_out_never_overwrites_a_database(site: Path, cli, target: str) -> None:
    before = _tree(site)
    output = _refused(cli, "SELECT 1", "--out", target)
    assert target in output
    assert _tree(site) == before


def test_out_refuses_what_is_not_a_regular_file(site: Path, cli) -> None:
    """`--out /dev/stdout` (a pipe here) was opened to sniff for a database, then replaced by
    the renamed file; now refused, the pipe left as it was (bytes are waiting in it so the
    old sniffing read could not block)."""
    fifo = site / "pipe.csv"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(held, b"x" * 64)
        output = _refused(cli, "SELECT 1 AS a", "--out", str(fifo))
        assert "not a regular file" in output
        assert stat.S_ISFIFO(fifo.lstat().st_mode)
    finally:
        os.close(held)


def test_the_configuration_stays_locked(site: Path) -> None:
    with open_guarded(Settings()) as con:
        for statement in ("SET lock_configuration = false", "RESET lock_configuration",
                          "SET autoload_known_extensions = true",
                          "SET enable_external_access = false"):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                con.execute(statement)
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('autoinstall_known_extensions', 'autoload_known_extensions', "
            "'lock_configuration', 'python_enable_replacements')").fetchall())
    assert settings == {"autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false",
                        "lock_configuration": "true", "python_enable_replacements": "false"}


def test_reads_are_accepted(site: Path) -> None:
    with open_guarded(Settings()) as con:
        for query in ("SELECT 1", "WITH a AS (SELECT 1) SELECT * FROM a", "VALUES (1), (2)",
                      "FROM raw.detections", "SUMMARIZE raw.detections", "DESCRIBE raw.detections",
                      "SHOW TABLES", "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1",
                      "PRAGMA table_info('raw.detections')", "PRAGMA database_size",
                      "PIVOT results.source_class ON agg_master_class IN ('AGN') USING count(*)"):
            assert len(read_statements(con, query)) == 1, query
        with pytest.raises(UserQueryError, match="empty"):
            read_statements(con, "  ;  ")


def test_plain_reads_joins_and_out(site: Path, cli) -> None:
    before = _tree(site)
    result = cli("sql", "--format", "csv",
                 "SELECT d.name, count(*) AS n, any_value(m.note) AS note FROM raw.detections d "
                 "JOIN read_csv('mine.csv') m USING (name) GROUP BY 1 ORDER BY 1")
    assert result.output.splitlines() == ['"name","n","note"', '"src1",7,"hello"',
                                          '"src2",7,"world"']
    result = cli("sql", "SELECT count(*) AS n FROM raw.detections; SELECT 40 + 2 AS answer")
    assert "50" in result.output and "42" in result.output
    cli("sql", "SELECT name, obsid, hard_hm FROM raw.detections ORDER BY obsid",
        "--out", "out.csv")
    cli("sql", "SELECT name, obsid, hard_hm FROM raw.detections ORDER BY obsid",
        "--format", "parquet", "--out", "out.parquet")
    from_csv = pl.read_csv(site / "out.csv")
    from_parquet = pl.from_arrow(pq.read_table(site / "out.parquet"))
    assert from_csv.height == 50 and from_csv["obsid"].to_list() == list(range(50))
    assert from_csv.equals(from_parquet.select(from_csv.columns))
    after = _tree(site)
    assert set(after) - set(before) == {"out.csv", "out.parquet"}
    assert {k: after[k] for k in before} == before


@pytest.mark.parametrize("out", ["out.fits", "out.vot"])
def test_out_votable_and_fits_write_only_that_file(site: Path, cli, out: str) -> None:
    """The two-pass writers (and their temporary file) leave nothing but the file asked for."""
    before = _tree(site)
    cli("sql", "SELECT name, obsid, hard_hm FROM raw.detections ORDER BY obsid", "--out", out)
    after = _tree(site)
    assert set(after) - set(before) == {out}
    assert {k: v for k, v in after.items() if k != out} == before
