"""`xpipe bic`: the elbow rule, the SQL curve against NumPy, and a small run end to end."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest
from science_fixtures import classified_copy
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from xpipe.science.bic import BicParams, elbow_k, knee_k
from xpipe.science.figures import bic_figure, png_bytes
from xpipe.warehouse.connection import connect_memory
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.seeds import feature_names
from xpipe.warehouse.sql_models import run_models


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory):
    return classified_copy(tmp_path_factory, "bic")


def test_elbow_rules() -> None:
    ks = np.arange(2, 12)
    # steep fall to K = 5, nearly flat afterwards: both readings give 5
    bic = np.array([1000, 700, 420, 200, 190, 182, 176, 171, 167, 164], dtype=float)
    assert elbow_k(ks, bic) == 5 and knee_k(ks, bic) == 5
    # an upturn after the minimum does not move the elbow
    assert elbow_k(ks, np.r_[bic[:6], 190, 205, 220, 240]) == 5
    # two bends: the elbow is the sharper one (improvement 300 → 40 at K = 3), the knee is
    # where the curve is farthest below its chord (K = 7, after the long second fall)
    two = np.array([1000, 700, 660, 560, 460, 360, 350, 345, 342, 340], dtype=float)
    assert elbow_k(ks, two) == 3 and knee_k(ks, two) == 7
    # a straight line has no bend: the first interior K (ties go to the smallest)
    assert elbow_k(ks, 1000 - 10.0 * ks) == 3
    assert elbow_k(ks[:2], bic[:2]) == 2  # fewer than three K: the first


def _curve_from_sql(scores: pl.DataFrame) -> pl.DataFrame:
    con = connect_memory()
    con.register("s", scores.to_arrow())
    create_table(con, "results.bic_scores")  # the contract's types, as `xpipe bic` writes them
    con.execute("INSERT INTO results.bic_scores BY NAME SELECT * FROM s")
    run_models(con, names=["results.bic_curve"])
    return con.sql("SELECT * FROM results.bic_curve ORDER BY k").pl()


def test_sql_curve_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    ks, seeds = np.arange(2, 10), np.arange(3)
    base = 5000 / ks + 3 * ks
    rows = [{"run_id": "r", "classify_run_id": "c", "k": int(k), "seed": int(s),
             "n_rows": 1000, "bic": float(base[i] + rng.normal(0, 2)),
             "log_likelihood": 0.0, "n_parameters": 1, "n_iter": 5, "converged": s != 2,
             "seconds": 0.1} for i, k in enumerate(ks) for s in seeds]
    scores = pl.DataFrame(rows)
    curve = _curve_from_sql(scores)
    wide = scores.pivot(on="seed", index="k", values="bic").sort("k").drop("k").to_numpy()
    mean = wide.mean(axis=1)
    np.testing.assert_allclose(curve["bic_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(curve["bic_std"], wide.std(axis=1, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(curve["gradient"], np.gradient(mean, ks), rtol=1e-9)
    assert curve.filter(pl.col("is_elbow"))["k"].to_list() == [elbow_k(ks, mean)]
    assert curve.filter(pl.col("is_knee"))["k"].to_list() == [knee_k(ks, mean)]
    assert curve.filter(pl.col("is_minimum"))["k"].to_list() == [int(ks[np.argmin(mean)])]
    assert curve["n_not_converged"].to_list() == [1] * len(ks)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="kmin <= kmax"):
        BicParams(kmin=5, kmax=3)
    assert BicParams(kmin=2, kmax=3, n_seeds=2).tasks() == [(3, 42), (3, 43), (2, 42), (2, 43)]


def test_bic_command(warehouse, cli, tmp_path) -> None:
    result = cli("--warehouse", str(warehouse), "bic", "--kmin", "2", "--kmax", "4",
                 "--seeds", "2", "--jobs", "2")
    assert "elbow K =" in result.output
    con = duckdb.connect(str(warehouse), read_only=True)
    scores = con.sql("SELECT * FROM results.bic_scores ORDER BY k, seed").pl()
    curve = con.sql("SELECT * FROM results.bic_curve ORDER BY k").pl()
    cols = ", ".join(f'"{c}"' for c in feature_names())
    x = con.sql(f"SELECT {cols} FROM model.scaled_features ORDER BY det_id").pl().to_numpy()
    run = con.sql("SELECT status, row_counts FROM meta.runs WHERE command = 'bic'").fetchall()
    con.close()
    assert scores.height == 6 and curve["k"].to_list() == [2, 3, 4]
    assert set(scores["n_rows"]) == {len(x)}  # below --fit-sample: every cleaned detection
    # a stored score is exactly scikit-learn's BIC for that K and seed
    one = scores.filter((pl.col("k") == 3) & (pl.col("seed") == 43)).row(0, named=True)
    with threadpool_limits(limits=1, user_api="blas"):
        direct = GaussianMixture(3, covariance_type="full", random_state=43).fit(x).bic(x)
    assert one["bic"] == pytest.approx(direct, rel=1e-9)
    assert curve["bic_mean"][0] > curve["bic_mean"][-1]  # more components fit better here
    assert run[0][0] == "ok"
    png = png_bytes(bic_figure(curve, scores, stored_k=6))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    again = cli("--warehouse", str(warehouse), "bic", "--kmax", "4", "--skip-if-current")
    assert "skipping" in again.output


def test_bic_needs_a_classification(cli, tmp_path) -> None:
    empty = tmp_path / "empty.duckdb"
    result = cli("--warehouse", str(empty), "bic", expect_ok=False)
    assert result.exit_code == 1 and "xpipe warehouse" in result.output
