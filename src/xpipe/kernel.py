"""Per-cluster reference statistics and the squared-Mahalanobis softmin classifier (METHOD §6).

The published code forms an N×N matrix per class and keeps its diagonal; here each class's
pseudo-inverse Σ⁺ is factored once as W Wᵀ (it is symmetric positive semi-definite), so that
d_k(x) = ‖(x − μ_k) W_k‖² for every class comes out of one matrix product per chunk of rows.
Reference statistics are accumulated chunk by chunk (Chan et al.'s pairwise update), so memory
does not grow with the number of references either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

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


def squared_mahalanobis(x: F64, means: F64, factors: F64, block_rows: int = 8192) -> F64:
    """d[i, k] = (x_i − μ_k)ᵀ Σ_k⁺ (x_i − μ_k) with Σ_k⁺ = W_k W_kᵀ; shapes (n,f), (K,f), (K,f,f).

    All classes come from one product x @ [W_1 … W_K] minus the projected means, done in blocks
    of rows small enough for the (block × K·f) intermediate to stay in cache.
    """
    n_classes, n_features, _ = factors.shape
    dtype = x.dtype
    stacked = factors.transpose(1, 0, 2).reshape(n_features, n_classes * n_features)
    stacked = np.ascontiguousarray(stacked, dtype=dtype)
    projected_means = (means[:, None, :] @ factors).reshape(-1).astype(dtype)
    out = np.empty((len(x), n_classes), dtype=np.float64)
    buffer = np.empty((min(block_rows, len(x)), n_classes * n_features), dtype=dtype)
    for start in range(0, len(x), block_rows):
        block = x[start:start + block_rows]
        projected = buffer[:len(block)]
        # einsum, not BLAS: a row's result must not depend on the rows around it (BLAS picks
        # other micro-kernels for edge tiles), so a frozen model gives any detection exactly the
        # probabilities the batch run gave it; einsum is as fast here (K·f is small).
        np.einsum("nf,fj->nj", block, stacked, out=projected)
        projected -= projected_means
        grouped = projected.reshape(len(block), n_classes, n_features)
        out[start:start + len(block)] = np.einsum("nkf,nkf->nk", grouped, grouped)
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
                 min_references: int = 12, dtype: type = np.float64) -> None:
        self.n_clusters = n_clusters
        self.n_classes = n_classes
        self.n_features = n_features
        self.min_references = min_references
        self.dtype = dtype  # float32 roughly doubles throughput; see bench/ for its accuracy

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

        Rows are grouped by cluster once (a stable sort), so each cluster is one contiguous
        block for the matrix products instead of a gather and a scatter per cluster.
        """
        order = np.argsort(clusters, kind="stable")
        sorted_clusters = clusters[order]
        x_sorted = np.ascontiguousarray(x[order], dtype=self.dtype)
        sorted_out = np.full((len(x), self.n_classes), np.inf)
        bounds = np.flatnonzero(np.diff(sorted_clusters)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(x)], strict=True):
            if stop == start:
                continue
            c = int(sorted_clusters[start])
            usable = np.flatnonzero(self.usable_[c])
            if len(usable) == 0:
                continue
            d = squared_mahalanobis(x_sorted[start:stop], self.means_[c, usable],
                                    self.factors_[c, usable])
            if len(usable) == self.n_classes:
                sorted_out[start:stop] = d
            else:
                sorted_out[start:stop, usable] = d
        out = np.empty_like(sorted_out)
        out[order] = sorted_out
        return out

    def predict_proba(self, x: F64, clusters: NDArray[np.integer]) -> F64:
        return softmin(self.distances(x, clusters))

    def predict(self, x: F64, clusters: NDArray[np.integer]) -> NDArray[np.int64]:
        """0-based class codes; -1 where the cluster has no usable class."""
        proba = self.predict_proba(x, clusters)
        codes = np.argmax(np.nan_to_num(proba, nan=-1.0), axis=1)
        codes[np.isnan(proba).any(axis=1)] = -1
        return codes
