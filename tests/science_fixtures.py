"""One small simulated, classified warehouse for the science tests, built once per session;
each test module works on its own copy, so modules cannot see each other's writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

N_DETECTIONS = 150_000
SEED = 7
_BUILT: dict[str, Path] = {}


def _build(root: Path) -> Path:
    from xpipe.cli.main import main

    warehouse = root / "xpipe.duckdb"
    runner = CliRunner()
    # single-threaded BLAS: the mixture fit on a few thousand rows is several times faster
    with threadpool_limits(limits=1, user_api="blas"):
        for args in (["warehouse", "--source", "sim", "--sim-dir", str(root / "sim"),
                      "--detections", str(N_DETECTIONS), "--seed", str(SEED)], ["classify"]):
            result = runner.invoke(main, ["--warehouse", str(warehouse), *args],
                                   catch_exceptions=False)
            assert result.exit_code == 0, result.output
    return warehouse


def classified_copy(factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy of the session's classified warehouse, in a folder named `name`."""
    if "warehouse" not in _BUILT:
        _BUILT["warehouse"] = _build(factory.mktemp("science-base"))
    target = factory.mktemp(name) / "xpipe.duckdb"
    shutil.copyfile(_BUILT["warehouse"], target)
    return target
