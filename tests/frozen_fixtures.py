"""One simulated, classified warehouse with injected outliers for the frozen-model, API and
anomaly tests, built once per session; each test module works on its own copy.

300,000 detections: large enough that most (cluster, class) reference sets hold well over the
12 references a class needs, which the anomaly ranking depends on (below ~200,000 detections a
few barely usable classes dominate the top of the ranking; see README, Anomalies).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

N_DETECTIONS = 300_000
SEED = 21
OUTLIER_FRACTION = 0.005
_BUILT: dict[str, Path] = {}


def _build(root: Path) -> Path:
    from xpipe.cli.main import main

    sim, warehouse = root / "sim", root / "xpipe.duckdb"
    runner = CliRunner()
    steps = (["simulate", "--detections", str(N_DETECTIONS), "--seed", str(SEED), "--out",
              str(sim), "--outlier-fraction", str(OUTLIER_FRACTION)],
             ["warehouse", "--source", str(sim / "detections"), "--labels", str(sim / "simbad")],
             ["classify"])
    # single-threaded BLAS: the mixture fit on ~10,000 rows is faster without thread overhead
    with threadpool_limits(limits=1, user_api="blas"):
        for args in steps:
            result = runner.invoke(main, ["--warehouse", str(warehouse), *args],
                                   catch_exceptions=False)
            assert result.exit_code == 0, result.output
    return root


def frozen_copy(factory: pytest.TempPathFactory, name: str) -> dict[str, Path]:
    """A private copy of the session's warehouse (`warehouse`) and its simulated catalogue
    (`sim`, read-only: shared)."""
    if "root" not in _BUILT:
        _BUILT["root"] = _build(factory.mktemp("frozen-base"))
    root = _BUILT["root"]
    target = factory.mktemp(name) / "xpipe.duckdb"
    shutil.copyfile(root / "xpipe.duckdb", target)
    return {"warehouse": target, "sim": root / "sim"}


def read_frame(warehouse: Path, query: str) -> pl.DataFrame:
    """A query's result on a read-only connection that is closed again."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.sql(query).pl()
    finally:
        con.close()
