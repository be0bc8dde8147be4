"""Anomaly scores: their definition, the per-source view, `xpipe anomalies`, injected outliers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from frozen_fixtures import OUTLIER_FRACTION, frozen_copy, read_frame
from scipy.special import logsumexp
from scipy.stats import chi2

from xpipe.method.mixture import weighted_log_density
from xpipe.models import store
from xpipe.simulation import (
    FEATURES,
    OUTLIER_KINDS,
    SimulationConfig,
    derive_features,
    inject_outliers,
    simulate_catalogue,
)
from xpipe.warehouse.seeds import class_names, feature_names


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return frozen_copy(tmp_path_factory, "anomaly")



def _scored(paths: dict[str, Path]) -> pl.DataFrame:
    """Every classified target with its anomaly columns and, for outliers, their kind."""
    return read_frame(paths["warehouse"], f"""
        SELECT d.det_id, d.name, d.min_mahalanobis_sq, d.log_likelihood, o.kind
        FROM results.detection_class AS d JOIN raw.detections AS r USING (det_id)
        LEFT JOIN read_parquet('{paths['sim']}/outliers/*.parquet') AS o
            ON o.name = r.name AND o.obsid = r.obsid AND o.region_id = r.region_id
        WHERE d.pred_class IS NOT NULL""")


def test_injected_outliers_rank_at_the_top(paths, report) -> None:
    scored = _scored(paths)
    top = math.ceil(0.01 * scored.height)
    by_distance = scored.sort(["min_mahalanobis_sq", "log_likelihood", "det_id"],
                              descending=[True, False, False]).head(top)
    by_likelihood = scored.sort("log_likelihood").head(top)
    outliers = scored.filter(pl.col("kind").is_not_null())
    found = by_distance["kind"].is_not_null().sum()
    recall = found / outliers.height
    per_kind = {k: int(by_distance.filter(pl.col("kind") == k).height) for k in OUTLIER_KINDS}
    sources = read_frame(paths["warehouse"],
                         "SELECT name, anomaly_rank FROM results.source_anomaly")
    top_sources = sources.filter(pl.col("anomaly_rank") <= math.ceil(0.01 * sources.height))
    source_recall = outliers["name"].unique().is_in(top_sources["name"].implode()).mean()
    report(f"anomalies: {outliers.height} injected outliers (fraction {OUTLIER_FRACTION}) among "
           f"{scored.height:,} classified targets; recall at the top 1 % ({top} detections) "
           f"{found}/{outliers.height} = {recall:.1%} (by kind {per_kind}); by log-likelihood "
           f"alone {by_likelihood['kind'].is_not_null().sum()}/{outliers.height}; outlier "
           f"sources in the top 1 % of sources {source_recall:.1%}")
    assert outliers.height >= 20
    assert recall >= 0.8
    assert source_recall >= 0.7  # the top 1 % of sources is a shorter list


def test_anomaly_columns_follow_their_definition(paths) -> None:
    """Recomputed from the stored model version: the same functions give the same bits."""
    cols = ", ".join(f's."{f}"' for f in feature_names())
    con = duckdb.connect(str(paths["warehouse"]), read_only=True)
    model = store.load(con)
    rows = con.sql(f"SELECT d.*, {cols} FROM results.detection_class AS d "
                   "JOIN model.scaled_features AS s USING (det_id) ORDER BY d.det_id").pl()
    con.close()
    x = rows.select(feature_names()).to_numpy()
    distances = model.kernel().distances(x, rows["cluster"].to_numpy())
    smallest = distances.min(axis=1)
    np.testing.assert_array_equal(rows["min_mahalanobis_sq"].to_numpy(), smallest)
    np.testing.assert_array_equal(rows["anomaly_p"].to_numpy(), chi2.sf(smallest, 12))
    np.testing.assert_array_equal(rows["log_likelihood"].to_numpy(),
                                  logsumexp(weighted_log_density(x, model.mixture), axis=1))
    nearest = np.array(class_names())[distances.argmin(axis=1)]
    assert rows["nearest_class"].to_list() == nearest.tolist()
    assert rows["anomaly_p"].is_between(0, 1).all()


def test_source_anomaly_keeps_each_sources_most_anomalous_detection(paths) -> None:
    view = read_frame(paths["warehouse"],
                      "SELECT * FROM results.source_anomaly ORDER BY anomaly_rank")
    worst = read_frame(paths["warehouse"],
                       "SELECT name, max(min_mahalanobis_sq) AS worst, count(*) AS n "
                       "FROM results.detection_class GROUP BY name")
    joined = view.join(worst, on="name")
    assert joined.height == view.height == worst.height
    assert (joined["min_mahalanobis_sq"] == joined["worst"]).all()
    assert (joined["scored_detections"] == joined["n"]).all()
    assert view["anomaly_rank"].to_list() == list(range(1, view.height + 1))
    assert view["min_mahalanobis_sq"].diff().drop_nulls().le(0).all()
    assert set(FEATURES) <= set(view.columns)


def test_anomalies_command(paths, cli, tmp_path: Path) -> None:
    wh = str(paths["warehouse"])
    table = cli("--warehouse", wh, "anomalies", "--top", "5").output
    assert "anomaly_rank" in table and "var_newq_b" in table
    csv = cli("--warehouse", wh, "anomalies", "--top", "50", "--format", "csv").output
    frame = pl.read_csv(csv.encode())
    assert frame["anomaly_rank"].to_list() == list(range(1, 51))
    assert {"name", "det_id", "min_mahalanobis_sq", "anomaly_p", "hard_hm"} <= set(frame.columns)
    cli("--warehouse", wh, "anomalies", "--format", "parquet", "--out", str(tmp_path / "a.pq"))
    assert pl.read_parquet(tmp_path / "a.pq").height == 50
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE SCHEMA results; CREATE TABLE results.detection_class (det_id BIGINT)")
    con.close()
    result = cli("--warehouse", str(old), "anomalies", expect_ok=False)
    assert result.exit_code == 1 and "run `xpipe classify` again" in result.output


def test_outlier_injection_changes_only_the_outliers(tmp_path: Path) -> None:
    """Fraction 0 is the catalogue as before (its own random stream); the outliers are complete,
    selected, unmatched detections with the documented feature ranges."""
    base = dict(n_detections=40_000, seed=3, chunk_detections=20_000)
    plain = simulate_catalogue(SimulationConfig(**base), tmp_path / "plain")
    summary = simulate_catalogue(SimulationConfig(**base, outlier_fraction=0.05),
                                 tmp_path / "out")
    assert "n_outliers" not in plain and not (tmp_path / "plain" / "outliers").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["files"]["outliers"] == [f"outliers/part-{i:05d}.parquet" for i in range(2)]
    a = pl.read_parquet(tmp_path / "plain" / "detections")
    b = pl.read_parquet(tmp_path / "out" / "detections")
    outliers = pl.read_parquet(tmp_path / "out" / "outliers")
    assert outliers.height == summary["n_outliers"] > 10
    key = ["name", "obsid", "obi", "region_id"]
    changed = a.join(b, on=key, suffix="_b").filter(
        pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_b"))
                          for c in a.columns if c not in key))
    assert sorted(changed["name"].to_list()) == sorted(outliers["name"].to_list())
    assert pl.read_parquet(tmp_path / "plain" / "simbad").equals(
        pl.read_parquet(tmp_path / "out" / "simbad"))
    rows = b.join(outliers, on=key)
    feats = derive_features({c: rows[c].to_numpy() for c in rows.columns if c in a.columns})
    assert np.isfinite(feats).all() and (rows["flux_significance_b"] > 5).all()
    truth = pl.read_parquet(tmp_path / "out" / "truth").filter(
        pl.col("name").is_in(outliers["name"].implode()))
    assert truth["simbad_main_id"].null_count() == truth.height  # unmatched sources only
    idx = {f: i for i, f in enumerate(FEATURES)}
    flare = feats[(rows["kind"] == "transient").to_numpy()]
    assert (flare[:, idx["var_prob_b"]] == 1).all()
    assert ((flare[:, idx["var_ratio_h"]] >= 15) & (flare[:, idx["var_ratio_h"]] <= 34)).all()
    assert np.allclose(np.clip(flare[:, idx["var_newq_b"]], 30, 600), flare[:, idx["var_newq_b"]])
    hard = feats[(rows["kind"] == "spectral").to_numpy()]
    assert (hard[:, idx["hard_hm"]] >= 0.85).all() and (hard[:, idx["hard_ms"]] <= -0.85).all()
    assert (hard[:, idx["powlaw_gamma"]] >= 7).all()
    assert pq.read_schema(tmp_path / "out" / "outliers" / "part-00000.parquet").names == [
        *key, "kind"]


def test_inject_outliers_respects_eligibility() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    cols = {f"var_{s}_{b}": rng.uniform(0.1, 1.0, n) for s in ("prob", "sigma", "mean", "min",
                                                                   "max") for b in "bhs"}
    cols |= {c: rng.uniform(-0.5, 0.5, n) for c in ("hard_hm", "hard_hs", "hard_ms")}
    cols |= {"powlaw_gamma": rng.uniform(1, 3, n), "bb_kt": rng.uniform(0.2, 2, n)}
    cols["var_max_b"] = cols["var_min_b"] + 0.5
    eligible = np.arange(n) % 2 == 0
    rows, kinds = inject_outliers(rng, cols, eligible, 0.1)
    assert len(rows) > 50 and eligible[rows].all() and set(kinds) <= {0, 1}
    none, _ = inject_outliers(rng, cols, eligible, 0.0)
    assert len(none) == 0
