"""Anomaly scores: how badly a detection fits the model (the paper's first motivation).

Two numbers per classified detection, both computed from what the classification already has:

- `log_likelihood`: log density of its scaled features under the fitted mixture (low: it lies
  where the catalogue has few detections);
- `min_mahalanobis_sq`: the smallest squared Mahalanobis distance to any usable reference class
  of its own cluster, and `anomaly_p`, its tail probability under χ² with as many degrees of
  freedom as features (12): the chance that a member of the nearest class lies this far out.

Detections are ranked by `min_mahalanobis_sq` (equivalently `anomaly_p`, which underflows to 0
beyond d² ≈ 1,500), ties by the lower log-likelihood.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy.special import logsumexp
from scipy.stats import chi2

from xpipe.method.mixture import MixtureParams, weighted_log_density

F64 = NDArray[np.float64]

def log_likelihood(log_density: F64) -> F64:
    """Mixture log-likelihood per row from `weighted_log_density` (n, K)."""
    return logsumexp(log_density, axis=1)


def nearest_reference(distances: F64) -> tuple[F64, NDArray[np.int64]]:
    """Smallest finite squared distance per row and the class code reaching it; NaN and -1
    where no class is usable (every distance +inf)."""
    codes = np.argmin(distances, axis=1)
    smallest = distances[np.arange(len(distances)), codes]
    missing = ~np.isfinite(smallest)
    return np.where(missing, np.nan, smallest), np.where(missing, -1, codes)


def tail_probability(squared_distance: F64, dof: int) -> F64:
    """P(χ²_dof ≥ d²): NaN stays NaN."""
    return chi2.sf(squared_distance, dof)


def anomaly_frame(x: F64, distances: F64, mixture: MixtureParams, classes: tuple[str, ...]
                  ) -> pl.DataFrame:
    """The anomaly columns of results.detection_class for rows `x` (scaled features) whose
    kernel distances are `distances`; χ² degrees of freedom = number of features."""
    smallest, codes = nearest_reference(distances)
    names = np.array([*classes, None], dtype=object)[codes]  # code -1 picks the None
    return pl.DataFrame({
        "log_likelihood": log_likelihood(weighted_log_density(x, mixture)),
        "min_mahalanobis_sq": pl.Series(smallest, nan_to_null=True),
        "nearest_class": pl.Series(names.tolist(), dtype=pl.Utf8),
        "anomaly_p": pl.Series(tail_probability(smallest, x.shape[1]), nan_to_null=True),
    })
