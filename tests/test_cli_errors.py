"""Failures by cause: a user's mistake or the machine's limits print one `Error: …` line; any
other exception is a bug and keeps its traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from xpipe.cli.main import main


def _vote_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exc: BaseException
                 ) -> list[str]:
    """`xpipe vote` calls vote_file: make it fail with `exc`; the arguments of the command."""

    def fail(*_args: object, **_kwargs: object) -> dict[str, int]:
        raise exc

    monkeypatch.setattr("xpipe.predict.votes.vote_file", fail)
    detections = tmp_path / "detections.csv"
    detections.write_text("det_id\n")
    return ["vote", "--detections", str(detections), "--out", str(tmp_path / "out")]


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "x.duckdb"
    done = subprocess.run([sys.executable, "-m", "xpipe.cli", "--warehouse", str(missing),
                           "summary"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr == (f"Error: no warehouse at {missing}: run `xpipe warehouse` "
                           "(or `make warehouse`)\n")
    assert done.stdout == ""


def test_changed_raise_is_still_one_line(tmp_path: Path, cli) -> None:
    """BicParams raises InputError (was ValueError) for an empty K range."""
    from xpipe.core.config import Settings
    from xpipe.warehouse.connection import connect

    connect(Settings(warehouse=tmp_path / "x.duckdb"), create=True).close()  # bic needs one
    result = cli("--warehouse", str(tmp_path / "x.duckdb"), "bic", "--kmin", "5", "--kmax", "3",
                 expect_ok=False)
    assert result.exit_code == 1
    assert result.output == "Error: need 1 <= kmin <= kmax, got kmin=5, kmax=3\n"


@pytest.mark.parametrize("exc", [KeyError("boom"), ValueError("boom"),
                                 duckdb.CatalogException("Catalog Error: boom")],
                         ids=["KeyError", "ValueError", "duckdb.CatalogException"])
def test_unexpected_exception_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, exc: Exception) -> None:
    args = _vote_raises(monkeypatch, tmp_path, exc)
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    assert result.exit_code == 1
    assert result.exception is exc
    assert "Error:" not in result.output


def test_unexpected_exception_prints_a_traceback() -> None:
    """The real process: the traceback reaches stderr (no one-line disguise)."""
    code = ("import sys, xpipe.warehouse.sql_models as m\n"
            "def fail(): raise KeyError('boom')\n"
            "m.describe_models = fail\n"
            "from xpipe.cli.main import main\n"
            "sys.argv = ['xpipe', 'dag']\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith("KeyError: 'boom'")
    assert "\nError: " not in "\n" + done.stderr


@pytest.mark.parametrize(("exc", "hint"), [
    (duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate data of size 16.0 "
                                 "MiB (16.0 MiB/19.0 MiB used)\n\nPossible solutions:\n* SET"),
     "XPIPE_MEMORY_LIMIT (now 20MB)"),
    (duckdb.IOException('IO Error: Could not write file "/t/x.tmp": No space left on device'),
     "XPIPE_TEMP_DIR"),
], ids=["out of memory", "disk full"])
def test_resource_errors_are_one_line_with_a_hint(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, exc: Exception, hint: str
                                                  ) -> None:
    monkeypatch.setenv("XPIPE_MEMORY_LIMIT", "20MB")
    args = _vote_raises(monkeypatch, tmp_path, exc)
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert hint in result.output


def test_locked_warehouse_names_the_warehouse(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(main, ["--warehouse", str(path), "summary"])
    finally:
        holder.communicate("", timeout=60)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: the warehouse {path} is open in another process, "
                                     "e.g. `xpipe serve`")
    assert result.output.count("\n") == 1


def test_failing_user_query_is_one_line(tmp_path: Path, cli) -> None:
    path = tmp_path / "x.duckdb"
    duckdb.connect(str(path)).close()
    result = cli("--warehouse", str(path), "sql", "SELECT error('boom')", expect_ok=False)
    assert result.exit_code == 1
    assert result.output == "Error: Invalid Input Error: boom\n"


def test_ctrl_c_inside_a_duckdb_query_aborts_without_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DuckDB turns SIGINT during a query into RuntimeError('Query interrupted'): the same
    `Aborted!` as a Ctrl-C anywhere else, never a traceback."""

    def long_query(*_args: object, **_kwargs: object) -> None:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        duckdb.connect().execute("SELECT count(*) FROM range(10000000000) a, range(10) b")

    monkeypatch.setattr("xpipe.predict.votes.vote_file", long_query)
    detections = tmp_path / "detections.csv"
    detections.write_text("det_id\n")
    result = CliRunner().invoke(main, ["vote", "--detections", str(detections),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "Aborted!" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
