"""Cluster assignment from stored parameters equals scikit-learn's own predict."""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture

from xpipe.method.mixture import MixtureParams, assign_clusters, fit_mixture


def test_assignment_matches_sklearn_predict() -> None:
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (4, 12))
    x = np.vstack([c + 0.05 * rng.standard_normal((300, 12)) for c in centres])
    params = fit_mixture(x, n_components=4, random_state=42)
    reference = GaussianMixture(n_components=4, covariance_type="full", random_state=42).fit(x)
    np.testing.assert_allclose(params.means, reference.means_)
    stored = MixtureParams(params.weights.copy(), params.means.copy(),
                           params.covariances.copy())
    fresh = rng.uniform(-0.2, 1.2, (5000, 12))
    assert np.array_equal(assign_clusters(fresh, stored), reference.predict(fresh))
    assert np.array_equal(assign_clusters(x, stored), reference.predict(x))
