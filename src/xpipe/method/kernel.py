"""Per-cluster reference statistics and the squared-Mahalanobis softmin classifier (METHOD §6).

The published code forms an N×N matrix per class and keeps its diagonal; here each class's
pseudo-inverse Σ⁺ is factored once as W Wᵀ (it is symmetric positive semi-definite), so that
d_k(x) = ‖(x − μ_k) W_k‖² for every class comes out of one matrix product per chunk of rows.
Reference statistics are accumulated chunk by chunk (Chan et al.'s pairwise update), so memory
does not grow with the number of references either. The float sums depend on where the chunks
end: `predict.scoring.fit_reference_stats` feeds each group fixed blocks of its rows, so that
the statistics do not depend on how the caller chunked them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

F64 = NDArray[np.float64]


@dataclass
class RunningMoments:
    """Count, mean and sum of squared deviations of one group, mergeable across chunks."""

    n: int
    mean: F64
    m2: F64

    @classmethod
    def empty(cls, n_features: int) -> RunningMoments:
        return cls(0, np.zeros(n_features), np.zeros((n_features, n_features)))

    def update(self, x: F64) -> None:
        if len(x) == 0:
            return
        n_b = len(x)
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def covariance(self) -> F64:
        """Sample covariance (ddof = 1), as numpy.cov computes it."""
        return self.m2 / (self.n - 1)


def psd_factor(matrix: F64) -> F64:
    """W with W Wᵀ = matrix for a symmetric positive semi-definite matrix (rounding clipped)."""
    sym = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(sym)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


# Rows per matrix product. Every product has exactly this shape (the last block of each
# cluster is padded), so BLAS takes the same path for every row wherever it sits in a batch:
# see distances_into. 1,024 rather than 4,096: as fast on 2M rows, and less padding per
# cluster at the paper's 14,507 (bench/kernel.py).
BLOCK_ROWS = 1024


def augmented_factors(means: F64, factors: F64) -> F64:
    """[W_1 … W_K] with −[μ_1 W_1 … μ_K W_K] as an extra last row, shape (f + 1, K·f).

    Against rows with a trailing 1 this gives (x − μ_k) W_k for every class in one product.
    """
    n_classes, n_features, _ = factors.shape
    stacked = factors.transpose(1, 0, 2).reshape(n_features, n_classes * n_features)
    projected_means = (means[:, None, :] @ factors).reshape(1, -1)
    return np.vstack([stacked, -projected_means])


@cache
def blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


@cache
def blas_is_row_independent(dtype: str, inner: int, outer: int) -> bool:
    """Whether BLAS gives a row the same bits at every position of a BLOCK_ROWS × inner block.

    Tested, not assumed: a block of identical rows must give identical products. OpenBLAS's
    float64 Haswell kernel passes; its float32 kernel does not (a row's last bits depend on
    its place in a tile), and a kernel that fails gets einsum, which is row by row. Run on one
    BLAS thread, as the products are.
    """
    rng = np.random.default_rng(0)
    weights: NDArray[Any] = rng.standard_normal((inner, outer)).astype(dtype)
    with blas_controller().limit(limits=1, user_api="blas"):
        for _ in range(3):
            row = rng.standard_normal((1, inner)).astype(dtype)
            rows: NDArray[Any] = np.repeat(row, BLOCK_ROWS, axis=0)
            product = rows @ weights
            if not (product == product[:1]).all():
                return False
    return True


def threads(n_jobs: int | None) -> int:
    """n_jobs as scikit-learn reads it here: None means every core this process may use."""
    if n_jobs:
        return n_jobs
    if hasattr(os, "sched_getaffinity"):  # a container's CPU set, not the host's count
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@cache
def thread_pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size for the process: starting threads on every call costs more than the
    paper-sized problem's arithmetic."""
    return ThreadPoolExecutor(workers, thread_name_prefix="xpipe-kernel")


def run_shared(work: Callable[[range], None], n_items: int, n_jobs: int | None) -> None:
    """Call work(items) on n_jobs interleaved shares of range(n_items), one thread each
    (numpy's loops and BLAS release the GIL); work writes its items' results itself."""
    workers = max(1, min(threads(n_jobs), n_items))
    shares = [range(w, n_items, workers) for w in range(workers)]
    if workers == 1:
        work(shares[0])
        return
    for done in [thread_pool(workers).submit(work, share) for share in shares]:
        done.result()


@dataclass(frozen=True)
class RowGroup:
    """Rows x[rows] against one set of classes, written to out[rows, columns]."""

    rows: NDArray[np.integer]
    weights: F64  # augmented_factors of the classes, in the kernel's dtype
    columns: NDArray[np.integer] | None  # None: every column of out
    use_blas: bool


def row_group(x: F64, rows: NDArray[np.integer], *, means: F64, factors: F64,
              columns: NDArray[np.integer] | None = None) -> RowGroup:
    weights = augmented_factors(means, factors).astype(x.dtype)
    return RowGroup(rows, weights, columns,
                    blas_is_row_independent(x.dtype.name, *weights.shape))


def distances_into(x: F64, groups: list[RowGroup], out: F64, n_jobs: int | None) -> None:
    """out[g.rows, g.columns] = squared distances of each group's rows to its classes.

    One product [x 1] @ augmented_factors per block of BLOCK_ROWS rows, sized to stay in
    cache, then the squared norms of each class's f columns; the blocks of every group are
    shared among n_jobs threads. A detection's result must not depend on the rows around it
    (a frozen model gives it exactly the probabilities the batch run gave it). BLAS picks its
    micro-kernels from the shape, so every product has the one shape BLOCK_ROWS × (f+1) (the
    last block of a group padded), runs on one BLAS thread, and uses BLAS only where
    blas_is_row_independent shows that this shape gives every position the same arithmetic.
    """
    n_features = x.shape[1]
    blocks = [(g, start) for g in groups for start in range(0, len(g.rows), BLOCK_ROWS)]
    widest = max((g.weights.shape[1] for g in groups), default=0)

    def work(items: range) -> None:
        rows = np.ones((BLOCK_ROWS, n_features + 1), dtype=x.dtype)  # last column stays 1
        flat = np.empty(BLOCK_ROWS * widest, dtype=x.dtype)
        for item in items:
            group, start = blocks[item]
            index = group.rows[start:start + BLOCK_ROWS]
            n_classes = group.weights.shape[1] // n_features
            projected = flat[:BLOCK_ROWS * n_classes * n_features].reshape(BLOCK_ROWS, -1)
            rows[:len(index), :n_features] = x[index]
            if group.use_blas:
                np.matmul(rows, group.weights, out=projected)
            else:
                np.einsum("nf,fj->nj", rows, group.weights, out=projected)
            grouped = projected.reshape(BLOCK_ROWS, n_classes, n_features)
            squared = np.einsum("nkf,nkf->nk", grouped, grouped)[:len(index)]
            if group.columns is None:
                out[index] = squared
            else:
                out[np.ix_(index, group.columns)] = squared

    with blas_controller().limit(limits=1, user_api="blas"):
        run_shared(work, len(blocks), n_jobs)


def softmin(distances: F64, n_jobs: int | None = None) -> F64:
    """p_k = exp(−d_k) / Σ_j exp(−d_j), shifted by the row minimum; +inf distances give 0.

    A row whose distances are all +inf (no usable class) is NaN: it cannot be classified.
    Computed in cache-sized blocks of rows on n_jobs threads (None: every core); each row's
    arithmetic is its own, so the result does not depend on either.
    """
    out = np.empty_like(distances, dtype=np.float64)

    def work(blocks: range) -> None:
        with np.errstate(invalid="ignore"):  # inf − inf in rows with no usable class: NaN
            for block in blocks:
                rows = slice(block * BLOCK_ROWS, (block + 1) * BLOCK_ROWS)
                d, w = distances[rows], out[rows]
                np.subtract(d, np.min(d, axis=1, keepdims=True), out=w)
                np.negative(w, out=w)
                np.exp(w, out=w)
                w /= w.sum(axis=1, keepdims=True)

    run_shared(work, -(-len(distances) // BLOCK_ROWS), n_jobs)
    return out


def usable_classes(counts: NDArray[np.integer], min_references: int) -> NDArray[np.bool_]:
    """Which (cluster, class) pairs have enough references for a covariance (at least 2)."""
    return np.asarray(counts) >= max(min_references, 2)


def predicted_codes(proba: F64) -> NDArray[np.int64]:
    """The most probable class code of each row; -1 where a row cannot be classified (NaN)."""
    unclassified = np.asarray(np.isnan(proba).any(axis=1))
    codes = np.argmax(np.where(unclassified[:, None], -1.0, proba), axis=1)
    codes[unclassified] = -1
    return codes


class MahalanobisSoftmin:
    """Classifies detections by their squared Mahalanobis distance to each reference class of
    their own cluster; classes with fewer than `min_references` references there get p = 0.

    As scikit-learn's incremental estimators: hyperparameters here, shapes learned from the data
    (`n_features_in_`) or given with the first `partial_fit` (`n_clusters`, `n_classes`, as
    `partial_fit` takes `classes=`), fitted state in trailing-underscore attributes.
    """

    def __init__(self, min_references: int = 12, *, dtype: type = np.float64,
                 n_jobs: int | None = None) -> None:
        self.min_references = min_references
        self.dtype = dtype  # float32: faster where BLAS allows; see bench/ for its accuracy
        self.n_jobs = n_jobs  # threads for the distances; None: every core. Results are the same

    def partial_fit(self, x: F64, classes: NDArray[np.integer], clusters: NDArray[np.integer],
                    *, n_clusters: int | None = None, n_classes: int | None = None
                    ) -> MahalanobisSoftmin:
        """Add a chunk of references (class and cluster given as 0-based codes); the first call
        names how many clusters and classes there are."""
        if not hasattr(self, "_moments"):
            self._start(n_clusters, n_classes, np.shape(x)[1])
        order = np.lexsort((classes, clusters))
        x, classes, clusters = x[order], classes[order], clusters[order]
        keys = clusters.astype(np.int64) * self.n_classes_ + classes
        bounds = np.flatnonzero(np.diff(keys)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(keys)], strict=True):
            if stop > start:
                c, k = divmod(int(keys[start]), self.n_classes_)
                self._moments[c][k].update(x[start:stop])
        return self._finalize()

    def fit(self, x: F64, classes: NDArray[np.integer], clusters: NDArray[np.integer], *,
            n_clusters: int, n_classes: int) -> MahalanobisSoftmin:
        if hasattr(self, "_moments"):
            del self._moments
        return self.partial_fit(x, classes, clusters, n_clusters=n_clusters, n_classes=n_classes)

    def _start(self, n_clusters: int | None, n_classes: int | None, n_features: int) -> None:
        if n_clusters is None or n_classes is None:
            raise ValueError("the first partial_fit needs n_clusters= and n_classes=")
        self.n_clusters_, self.n_classes_, self.n_features_in_ = n_clusters, n_classes, n_features
        self._moments = [[RunningMoments.empty(n_features) for _ in range(n_classes)]
                         for _ in range(n_clusters)]

    def _finalize(self) -> MahalanobisSoftmin:
        shape = (self.n_clusters_, self.n_classes_)
        f = self.n_features_in_
        self.counts_ = np.array([[m.n for m in row] for row in self._moments]).reshape(shape)
        self.usable_ = usable_classes(self.counts_, self.min_references)
        self.means_ = np.zeros((*shape, f))
        self.pinv_ = np.zeros((*shape, f, f))
        self.factors_ = np.zeros((*shape, f, f))
        for c, k in zip(*np.nonzero(self.usable_), strict=True):
            moments = self._moments[c][k]
            self.means_[c, k] = moments.mean
            self.pinv_[c, k] = np.linalg.pinv(moments.covariance())
            self.factors_[c, k] = psd_factor(self.pinv_[c, k])
        return self

    def set_statistics(self, counts: NDArray[np.integer], means: F64, pinv: F64
                       ) -> MahalanobisSoftmin:
        """Restore fitted state from stored statistics (a frozen model); shapes from `means`."""
        self.n_clusters_, self.n_classes_, self.n_features_in_ = np.shape(means)
        self.counts_ = np.asarray(counts)
        self.usable_ = usable_classes(self.counts_, self.min_references)
        self.means_ = np.asarray(means, dtype=np.float64)
        self.pinv_ = np.asarray(pinv, dtype=np.float64)
        self.factors_ = np.zeros_like(self.pinv_)
        for c, k in zip(*np.nonzero(self.usable_), strict=True):
            self.factors_[c, k] = psd_factor(self.pinv_[c, k])
        return self

    def distances(self, x: F64, clusters: NDArray[np.integer]) -> F64:
        """Squared distances to every class of each row's cluster; +inf for unusable classes.

        Rows are grouped by cluster once (a stable sort); a cluster's rows are gathered a block
        at a time and the blocks of all clusters shared among the threads (distances_into).
        """
        x = np.asarray(x, dtype=self.dtype)
        order = np.argsort(clusters, kind="stable")
        sorted_clusters = clusters[order]
        out = np.full((len(x), self.n_classes_), np.inf)
        bounds = np.flatnonzero(np.diff(sorted_clusters)) + 1
        groups = []
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(x)], strict=True):
            if stop == start:
                continue
            c = int(sorted_clusters[start])
            usable = np.flatnonzero(self.usable_[c])
            if len(usable) == 0:
                continue
            columns = None if len(usable) == self.n_classes_ else usable
            groups.append(row_group(x, order[start:stop], means=self.means_[c, usable],
                                    factors=self.factors_[c, usable], columns=columns))
        distances_into(x, groups, out, self.n_jobs)
        return out

    def predict_proba(self, x: F64, clusters: NDArray[np.integer]) -> F64:
        return softmin(self.distances(x, clusters), self.n_jobs)

    def predict(self, x: F64, clusters: NDArray[np.integer]) -> NDArray[np.int64]:
        """0-based class codes; -1 where the cluster has no usable class."""
        return predicted_codes(self.predict_proba(x, clusters))
