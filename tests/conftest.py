"""Shared fixtures: the reference data in ../shared (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from factories import detections_frame

os.environ.setdefault("XPIPE_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PAPER = SHARED / "reference" / "paper"
CSC = SHARED / "reference" / "csc"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"../shared reference data absent ({path} not found): this test needs the "
                    "real published tables, available in the project's CI checkout")
    return path


@pytest.fixture
def paper_dir() -> Path:
    return _require(PAPER)


@pytest.fixture
def csc_dir() -> Path:
    return _require(CSC)


@pytest.fixture
def warehouse_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "wh" / "xpipe.duckdb"
    monkeypatch.setenv("XPIPE_WAREHOUSE", str(path))
    return path


@pytest.fixture
def cli():
    """Invoke `xpipe ...`; fails the test with the command's output on a non-zero exit."""
    from xpipe.cli.main import main

    runner = CliRunner()

    def invoke(*args: str, expect_ok: bool = True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if expect_ok and result.exit_code != 0:
            pytest.fail(f"xpipe {' '.join(args)} exited {result.exit_code}:\n{result.output}")
        return result

    return invoke


@pytest.fixture
def loaded(tmp_path: Path, cli) -> Path:
    """A small warehouse with detections loaded by the current code."""
    source = tmp_path / "detections.parquet"
    detections_frame(40).write_parquet(source)
    warehouse = tmp_path / "wh" / "xpipe.duckdb"
    cli("--warehouse", str(warehouse), "warehouse", "--source", str(source), "--labels", "none")
    return warehouse


_REPORT: list[str] = []


@pytest.fixture
def report():
    """Lines shown in the test summary: measured numbers a reader of CI output wants to see."""
    return _REPORT.append


def pytest_terminal_summary(terminalreporter) -> None:
    if _REPORT:
        terminalreporter.section("xpipe measurements")
        for line in _REPORT:
            terminalreporter.write_line(line)
