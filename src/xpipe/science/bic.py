"""`xpipe bic`: the BIC curve over K that the choice of K rests on (METHOD §4, paper Fig. 1).

Every (K, seed) fit is independent, so they run in parallel worker processes (joblib), each with
single-threaded BLAS: on these small 12-feature problems BLAS threads only contend. Python writes
the raw scores (results.bic_scores); the curve — mean, spread, gradient and the elbow — is the
SQL model results.bic_curve.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import duckdb
import numpy as np
import polars as pl
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from xpipe.core.errors import InputError, TooFewRowsError
from xpipe.core.progress import progress_bar
from xpipe.method.mixture import fit_gaussian_mixture
from xpipe.science.common import (
    F64,
    classify_params,
    classify_run_id,
    fit_sample,
    require_classified,
)
from xpipe.warehouse.connection import transaction
from xpipe.warehouse.provenance import RunRecorder, recorded_run
from xpipe.warehouse.sql_models import run_models, write_table


@dataclass(frozen=True)
class BicParams:
    """The K range and seeds; seeds are first_seed, first_seed + 1, …"""

    kmin: int = 2
    kmax: int = 20
    n_seeds: int = 5
    first_seed: int = 42
    n_jobs: int = -1
    fit_sample_size: int | None = None  # None: the stored classification's own sample rule

    def __post_init__(self) -> None:
        if not 1 <= self.kmin <= self.kmax:
            raise InputError(f"need 1 <= kmin <= kmax, got kmin={self.kmin}, kmax={self.kmax}")
        if self.n_seeds < 1:
            raise InputError(f"need at least one seed, got {self.n_seeds}")

    def tasks(self) -> list[tuple[int, int]]:
        """(K, seed) pairs, largest K first so the slow fits do not end up last on one core."""
        seeds = range(self.first_seed, self.first_seed + self.n_seeds)
        return [(k, s) for k in range(self.kmax, self.kmin - 1, -1) for s in seeds]


def bic_score(x: F64, k: int, seed: int) -> dict[str, object]:
    """One mixture fit and its BIC (lower is better), with what is needed to judge it."""
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        gmm = fit_gaussian_mixture(x, k, seed)
        bic = float(gmm.bic(x))
        log_likelihood = float(gmm.score(x) * len(x))
    return {"k": k, "seed": seed, "n_rows": len(x), "bic": bic,
            "log_likelihood": log_likelihood, "n_parameters": int(gmm._n_parameters()),
            "n_iter": int(gmm.n_iter_), "converged": bool(gmm.converged_),
            "seconds": round(time.perf_counter() - start, 3)}


def bic_grid(x: F64, tasks: list[tuple[int, int]], n_jobs: int = -1,
             on_done: Callable[[dict[str, object]], None] | None = None) -> pl.DataFrame:
    """BIC for every (K, seed), fitted in parallel; `on_done` sees each result as it lands."""
    runner = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    rows = []
    for row in runner(delayed(bic_score)(x, k, seed) for k, seed in tasks):
        rows.append(row)
        if on_done is not None:
            on_done(row)
    return pl.DataFrame(rows).sort("k", "seed")


def bic_scores_frame(scores: pl.DataFrame, run_id: str, classify_run: str) -> pl.DataFrame:
    return scores.select(
        pl.lit(run_id).alias("run_id"), pl.lit(classify_run).alias("classify_run_id"),
        pl.col("k").cast(pl.Int32), pl.col("seed").cast(pl.Int64),
        pl.col("n_rows").cast(pl.Int64), "bic", "log_likelihood",
        pl.col("n_parameters").cast(pl.Int64), pl.col("n_iter").cast(pl.Int32), "converged",
        "seconds")


@dataclass(frozen=True)
class BicResult:
    run: RunRecorder
    curve: pl.DataFrame  # results.bic_curve

    @property
    def elbow_k(self) -> int:
        return int(self.curve.filter(pl.col("is_elbow"))["k"][0])


def run_bic(con: duckdb.DuckDBPyConnection, params: BicParams) -> BicResult:
    """Fit every (K, seed) on the classification's fit sample and store scores and curve."""
    require_classified(con)
    stored = classify_params(con)
    if params.fit_sample_size is not None:
        stored = replace(stored, fit_sample_size=params.fit_sample_size)
    classify_run = classify_run_id(con)
    with recorded_run(con, "bic", {**asdict(params), "classify_run_id": classify_run}) as run:
        with run.stage("read_sample"):
            x = fit_sample(con, stored)
        if len(x) <= params.kmax:
            raise TooFewRowsError(f"{len(x)} cleaned detections: too few for K up to "
                                  f"{params.kmax}")
        tasks = params.tasks()
        with run.stage("fit"), progress_bar("BIC fits", total=len(tasks), unit="fits") as bar:
            def advance(_row: dict[str, object]) -> None:
                bar.update(1)

            scores = bic_grid(x, tasks, params.n_jobs, on_done=advance)
        with run.stage("store"), transaction(con):
            write_table(con, "results.bic_scores",
                         bic_scores_frame(scores, run.run_id, classify_run))
            run_models(con, names=["results.bic_curve"])
        curve = con.sql("SELECT * FROM results.bic_curve ORDER BY k").pl()
        run.count("fits", len(scores))
        run.count("rows", len(x))
        run.count("not_converged", int((~scores["converged"]).sum()))
        run.count("elbow_k", int(curve.filter(pl.col("is_elbow"))["k"][0]))
        run.count("knee_k", int(curve.filter(pl.col("is_knee"))["k"][0]))
    return BicResult(run, curve)


def elbow_k(ks: np.ndarray, mean_bic: np.ndarray) -> int:
    """The rule of results.bic_curve, in NumPy (for tests and notebooks): the interior K after
    which one more component improves the mean BIC the least compared with the step before,
    argmax of BIC(K-1) - 2 BIC(K) + BIC(K+1) — the sharpest bend of the gradient the paper
    reads its K from. The smallest such K on ties; the first K with fewer than three."""
    ks, mean_bic = np.asarray(ks), np.asarray(mean_bic, dtype=float)
    if len(ks) < 3:
        return int(ks[0])
    drop = mean_bic[:-2] - 2 * mean_bic[1:-1] + mean_bic[2:]
    return int(ks[1:-1][np.argmax(drop)])


def knee_k(ks: np.ndarray, mean_bic: np.ndarray) -> int:
    """The second reading results.bic_curve gives: the K whose mean BIC lies farthest below the
    straight line joining the curve's ends, both axes scaled to [0, 1] (the "knee" of Satopää
    et al. 2011); the smallest such K on ties."""
    ks, mean_bic = np.asarray(ks, dtype=float), np.asarray(mean_bic, dtype=float)
    if len(ks) < 3 or np.ptp(mean_bic) == 0:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (mean_bic - mean_bic.min()) / np.ptp(mean_bic)
    chord = y[0] + (y[-1] - y[0]) * x
    return int(ks[np.argmax(np.round(chord - y, 12))])


def curve_text(curve: pl.DataFrame) -> str:
    """The curve as the command prints it."""
    lines = [f"{'K':>3} {'seeds':>5} {'mean BIC':>14} {'std':>10} {'gradient':>12}"]
    for row in curve.iter_rows(named=True):
        mark = "  <- elbow" if row["is_elbow"] else ""
        mark += "  (knee)" if row["is_knee"] else ""
        mark += "  (lowest mean)" if row["is_minimum"] else ""
        lines.append(f"{row['k']:>3} {row['n_seeds']:>5} {row['bic_mean']:>14,.0f} "
                     f"{row['bic_std']:>10,.0f} {row['gradient']:>12,.0f}{mark}")
    return "\n".join(lines)
