"""Per-cluster reference statistics and the squared-Mahalanobis softmin classifier (METHOD §6).

The published code forms an N×N matrix per class and keeps its diagonal; here each class's
pseudo-inverse Σ⁺ is factored once as W Wᵀ (it is symmetric positive semi-definite), so that
d_k(x) = ‖(x − μ_k) W_k‖² for every class comes out of one matrix product per chunk of rows.
Reference statistics are accumulated chunk by chunk (Chan et al.'s pairwise update), so memory
does not grow with the number of references either.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

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


# Rows per matrix product. Every product has exactly this shape (the last block is padded), so
# BLAS takes the same path for every row wherever it sits in a batch: see squared_mahalanobis.
BLOCK_ROWS = 4096


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
def blas_is_row_independent(dtype: type, inner: int, outer: int) -> bool:
    """Whether BLAS gives a row the same bits at every position of a BLOCK_ROWS × inner block.

    Tested, not assumed: a block of identical rows must give identical products. OpenBLAS's
    float64 Haswell kernel passes; its float32 kernel does not (a row's last bits depend on
    its place in a tile), and a kernel that fails gets einsum, which is row by row. Call it
    with BLAS limited to one thread, as the products run.
    """
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((inner, outer)).astype(dtype)
    for _ in range(3):
        rows = np.repeat(rng.standard_normal((1, inner)).astype(dtype), BLOCK_ROWS, axis=0)
        product = rows @ weights
        if not (product == product[:1]).all():
            return False
    return True


def _distance_blocks(x: F64, index: NDArray[np.integer], weights: F64, n_classes: int,
                     starts: range, out: F64, use_blas: bool) -> None:
    """Distances of the rows x[index[s:s + BLOCK_ROWS]] for each s in `starts`, into out."""
    n_features = x.shape[1]
    rows = np.ones((BLOCK_ROWS, n_features + 1), dtype=weights.dtype)  # last column stays 1
    projected = np.empty((BLOCK_ROWS, weights.shape[1]), dtype=weights.dtype)
    grouped = projected.reshape(BLOCK_ROWS, n_classes, n_features)
    squared = np.empty((BLOCK_ROWS, n_classes), dtype=np.float64)
    for start in starts:
        block = index[start:start + BLOCK_ROWS]
        rows[:len(block), :n_features] = x[block]
        if use_blas:
            np.matmul(rows, weights, out=projected)
        else:
            np.einsum("nf,fj->nj", rows, weights, out=projected)
        np.einsum("nkf,nkf->nk", grouped, grouped, out=squared)
        out[start:start + len(block)] = squared[:len(block)]


def squared_mahalanobis(x: F64, means: F64, factors: F64, index: NDArray[np.integer] | None = None,
                        n_jobs: int = 1) -> F64:
    """d[i, k] = (x_j − μ_k)ᵀ Σ_k⁺ (x_j − μ_k), j = index[i], with Σ_k⁺ = W_k W_kᵀ; shapes (n,f),
    (K,f), (K,f,f); index defaults to every row.

    One product [x 1] @ augmented_factors per block of rows, sized to stay in cache, then the
    squared norms of each class's f columns; blocks are shared among n_jobs threads. A
    detection's result must not depend on the rows around it (a frozen model gives it exactly
    the probabilities the batch run gave it). BLAS picks its micro-kernels from the shape, so
    every product has the one shape BLOCK_ROWS × (f+1) (the last block padded), runs on one
    BLAS thread, and uses BLAS only where blas_is_row_independent shows that this shape gives
    every position the same arithmetic.
    """
    n_classes = factors.shape[0]
    index = np.arange(len(x)) if index is None else index
    weights = augmented_factors(means, factors).astype(x.dtype)
    out = np.empty((len(index), n_classes), dtype=np.float64)
    n_blocks = -(-len(index) // BLOCK_ROWS)
    workers = max(1, min(n_jobs, n_blocks))
    with blas_controller().limit(limits=1, user_api="blas"):
        use_blas = blas_is_row_independent(x.dtype.type, *weights.shape)
        shares = [range(w * BLOCK_ROWS, len(index), workers * BLOCK_ROWS) for w in range(workers)]
        if workers == 1:
            _distance_blocks(x, index, weights, n_classes, shares[0], out, use_blas)
        else:
            with ThreadPoolExecutor(workers) as pool:
                for done in [pool.submit(_distance_blocks, x, index, weights, n_classes, share,
                                         out, use_blas) for share in shares]:
                    done.result()
    return out


def softmin(distances: F64) -> F64:
    """p_k = exp(−d_k) / Σ_j exp(−d_j), shifted by the row minimum; +inf distances give 0.

    A row whose distances are all +inf (no usable class) is NaN: it cannot be classified.
    """
    with np.errstate(invalid="ignore"):  # inf − inf in rows with no usable class: NaN
        weights = distances - np.min(distances, axis=1, keepdims=True)
        np.negative(weights, out=weights)
        np.exp(weights, out=weights)
        weights /= weights.sum(axis=1, keepdims=True)
    return weights


class MahalanobisSoftmin:
    """Classifies detections by their squared Mahalanobis distance to each reference class of
    their own cluster; classes with fewer than `min_references` references there get p = 0."""

    def __init__(self, n_clusters: int, n_classes: int, n_features: int,
                 min_references: int = 12, dtype: type = np.float64,
                 n_jobs: int | None = None) -> None:
        self.n_clusters = n_clusters
        self.n_classes = n_classes
        self.n_features = n_features
        self.min_references = min_references
        self.dtype = dtype  # float32: faster where BLAS allows; see bench/ for its accuracy
        self.n_jobs = n_jobs  # threads for the distances; None: every core. Results are the same

    def partial_fit(self, x: F64, classes: NDArray[np.integer], clusters: NDArray[np.integer]
                    ) -> MahalanobisSoftmin:
        """Add a chunk of references (class and cluster given as 0-based codes)."""
        if not hasattr(self, "_moments"):
            self._moments = [[RunningMoments.empty(self.n_features) for _ in range(self.n_classes)]
                             for _ in range(self.n_clusters)]
        order = np.lexsort((classes, clusters))
        x, classes, clusters = x[order], classes[order], clusters[order]
        keys = clusters.astype(np.int64) * self.n_classes + classes
        bounds = np.flatnonzero(np.diff(keys)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(keys)], strict=True):
            if stop > start:
                c, k = divmod(int(keys[start]), self.n_classes)
                self._moments[c][k].update(x[start:stop])
        return self._finalize()

    def fit(self, x: F64, classes: NDArray[np.integer], clusters: NDArray[np.integer]
            ) -> MahalanobisSoftmin:
        if hasattr(self, "_moments"):
            del self._moments
        return self.partial_fit(x, classes, clusters)

    def _finalize(self) -> MahalanobisSoftmin:
        shape = (self.n_clusters, self.n_classes)
        f = self.n_features
        self.counts_ = np.array([[m.n for m in row] for row in self._moments]).reshape(shape)
        self.usable_ = self.counts_ >= max(self.min_references, 2)
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
        """Restore fitted state from stored statistics (a frozen model)."""
        self.counts_ = np.asarray(counts)
        self.usable_ = self.counts_ >= max(self.min_references, 2)
        self.means_ = np.asarray(means, dtype=np.float64)
        self.pinv_ = np.asarray(pinv, dtype=np.float64)
        self.factors_ = np.zeros_like(self.pinv_)
        for c, k in zip(*np.nonzero(self.usable_), strict=True):
            self.factors_[c, k] = psd_factor(self.pinv_[c, k])
        return self

    def distances(self, x: F64, clusters: NDArray[np.integer]) -> F64:
        """Squared distances to every class of each row's cluster; +inf for unusable classes.

        Rows are grouped by cluster once (a stable sort); each cluster's rows are gathered a
        block at a time, so no sorted copy of x is made.
        """
        x = np.asarray(x, dtype=self.dtype)
        n_jobs = self.n_jobs or os.cpu_count() or 1
        order = np.argsort(clusters, kind="stable")
        sorted_clusters = clusters[order]
        out = np.full((len(x), self.n_classes), np.inf)
        bounds = np.flatnonzero(np.diff(sorted_clusters)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(x)], strict=True):
            if stop == start:
                continue
            c = int(sorted_clusters[start])
            usable = np.flatnonzero(self.usable_[c])
            if len(usable) == 0:
                continue
            rows = order[start:stop]
            d = squared_mahalanobis(x, self.means_[c, usable], self.factors_[c, usable],
                                    index=rows, n_jobs=n_jobs)
            if len(usable) == self.n_classes:
                out[rows] = d
            else:
                out[np.ix_(rows, usable)] = d
        return out

    def predict_proba(self, x: F64, clusters: NDArray[np.integer]) -> F64:
        return softmin(self.distances(x, clusters))

    def predict(self, x: F64, clusters: NDArray[np.integer]) -> NDArray[np.int64]:
        """0-based class codes; -1 where the cluster has no usable class."""
        proba = self.predict_proba(x, clusters)
        codes = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
        codes[np.isnan(proba).any(axis=1)] = -1
        return codes
