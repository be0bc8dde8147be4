"""Gaussian-mixture clustering of the scaled features (METHOD §4).

scikit-learn fits the mixture; assignment uses the stored parameters through a small pure
function, so a model read back from the warehouse assigns exactly as it did when fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import cholesky, solve_triangular
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class MixtureParams:
    weights: F64  # (K,)
    means: F64  # (K, f)
    covariances: F64  # (K, f, f)

    @property
    def n_components(self) -> int:
        return len(self.weights)


class NotConvergedError(RuntimeError):
    """EM stopped at its iteration limit before converging."""


def fit_gaussian_mixture(x: F64, n_components: int, random_state: int) -> GaussianMixture:
    """The method's mixture (full covariances) for any K and seed, on one BLAS thread: EM on 12
    features is many tiny matrix products, where threaded BLAS only adds synchronisation (4-5x
    slower on 2 cores). Convergence is the caller's to judge (a BIC curve reports it)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return GaussianMixture(n_components=n_components, covariance_type="full",
                               random_state=random_state).fit(x)


def mixture_params(gmm: GaussianMixture) -> MixtureParams:
    return MixtureParams(gmm.weights_, gmm.means_, gmm.covariances_)


def fit_mixture(x: F64, n_components: int = 6, random_state: int = 42) -> MixtureParams:
    """The classification's mixture: a fit that did not converge is refused."""
    gmm = fit_gaussian_mixture(x, n_components, random_state)
    if not gmm.converged_:
        raise NotConvergedError(f"GaussianMixture(K={n_components}) did not converge in "
                                f"{gmm.max_iter} iterations on {len(x)} rows")
    return mixture_params(gmm)


def weighted_log_density(x: F64, params: MixtureParams) -> F64:
    """log(w_k) + log N(x | μ_k, Σ_k) for every row and component, shape (n, K)."""
    n, f = x.shape
    out = np.empty((n, params.n_components))
    for k in range(params.n_components):
        chol = cholesky(params.covariances[k], lower=True)
        # z = L⁻¹(x − μ) through einsum rather than a BLAS triangular solve: each row's result
        # is then independent of the other rows (BLAS changes kernels with the row count), so
        # a detection is assigned and scored identically alone or in the whole catalogue.
        inverse = solve_triangular(chol, np.eye(f), lower=True)
        z = np.einsum("nf,gf->ng", x - params.means[k], inverse)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = (np.log(params.weights[k]) - 0.5 * (f * np.log(2 * np.pi) + log_det)
                     - 0.5 * np.einsum("ng,ng->n", z, z))
    return out


def assign_clusters(x: F64, params: MixtureParams) -> NDArray[np.int64]:
    """Most probable component, as GaussianMixture.predict."""
    return np.argmax(weighted_log_density(x, params), axis=1)
