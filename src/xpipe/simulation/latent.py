"""The latent space the mixtures live in: an unbounded, roughly Gaussian image of the 12
features (FEATURES order). Shared with scripts/calibrate_simulator.py so fit and sampling
agree."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import expit, logit

HARD_CLIP = 0.9995  # atanh(±0.9995) = ±4.1: keeps the ratios at CSC's ±0.999375 finite
PROB_EPS = 1e-4  # var_prob >= 1 - PROB_EPS is the exact 1 of CSC (a point mass in the data)
PROB_FLOOR = 1e-10  # var_prob below this is treated as this (a few rows reach 1e-234)
RATIO_FLOOR = 1e-6  # var_ratio below this (σ at rounding noise) is treated as this for the fit
_LATENT_MIN_RATIO = math.log(1e-9)
_LOGIT_TOP = math.log((1.0 - PROB_EPS) / PROB_EPS)


def features_to_latent(x: np.ndarray) -> np.ndarray:
    """Map (n, 12) raw features (FEATURES order) to an unbounded, roughly Gaussian space.

    atanh for hardness ratios in (-1, 1), log for bb_kt, var_ratio_* and var_newq_b, logit
    for var_prob_* (clipped away from 0 and 1); powlaw_gamma is kept as is.
    """
    x = np.asarray(x, dtype=float)
    z = np.empty_like(x)
    z[:, 0:3] = np.arctanh(np.clip(x[:, 0:3], -HARD_CLIP, HARD_CLIP))
    z[:, 3] = x[:, 3]
    z[:, 4] = np.log(x[:, 4])
    for i in (5, 7, 9):
        z[:, i] = logit(np.clip(x[:, i], PROB_FLOOR, 1.0 - PROB_EPS))
    for i in (6, 8, 10):
        z[:, i] = np.log(np.maximum(x[:, i], RATIO_FLOOR))
    z[:, 11] = np.log(x[:, 11])
    return z


def latent_to_features(z: np.ndarray, bounds: Mapping[str, Any]) -> np.ndarray:
    """Inverse of `features_to_latent`, clipped to the range seen in the real catalogue.

    NaN in the var_newq_b column (the "symmetric" state, newq = 1 exactly) passes through.
    """
    x = np.empty_like(z)
    hard_max = float(bounds["hard_abs_max"])
    x[:, 0:3] = np.clip(np.tanh(z[:, 0:3]), -hard_max, hard_max)
    g_lo, g_hi = bounds["powlaw_gamma"]
    x[:, 3] = np.clip(z[:, 3], g_lo, g_hi)
    k_lo, k_hi = bounds["bb_kt"]
    x[:, 4] = np.exp(np.clip(z[:, 4], math.log(k_lo), math.log(k_hi)))
    top = _LOGIT_TOP - 1e-4  # the stored quantiles are rounded to 6 digits
    for i in (5, 7, 9):
        p = expit(z[:, i])
        p[z[:, i] >= top] = 1.0
        x[:, i] = p
    ratio_max = math.log(float(bounds["var_ratio_max"]))
    for i in (6, 8, 10):
        x[:, i] = np.exp(np.clip(z[:, i], _LATENT_MIN_RATIO, ratio_max))
    q_lo, q_hi = bounds["var_newq_b"]
    x[:, 11] = np.exp(np.clip(z[:, 11], math.log(q_lo), math.log(q_hi)))
    return x


def apply_uniform_maps(
    z: np.ndarray, start: np.ndarray, step: np.ndarray, vals: np.ndarray
) -> np.ndarray:
    """Piecewise-linear maps on uniform grids, one per column (flat beyond the ends), like
    np.interp but for all columns at once: z (n, d), start/step (d,), vals (d, G)."""
    n_grid = vals.shape[1]
    t = (z - start) / step
    j = np.clip(np.floor(t), 0, n_grid - 2).astype(np.intp)
    f = np.clip(t - j, 0.0, 1.0, out=t)
    j += np.arange(z.shape[1]) * n_grid  # flat index into vals: a take, not a 2-D gather
    flat = np.ascontiguousarray(vals).reshape(-1)
    lo = np.take(flat, j)
    return lo + (np.take(flat, j + 1) - lo) * f


def blend_latents(
    z_src: np.ndarray,
    dev: np.ndarray,
    mean: np.ndarray,
    keep: np.ndarray,
    scale: np.ndarray | float,
) -> np.ndarray:
    """m + a (z_src - m) + sqrt(1 - a^2) s dev, with dev ~ N(0, component covariance).

    With s = 1 each dimension keeps exactly the component's variance, so every detection
    follows the calibrated class marginals while detections of one source stay correlated
    (a, per dimension, from the within-source scatter); s > 1 widens faint rows.
    """
    out = dev * (np.sqrt(1.0 - keep**2) * scale)
    out += mean
    out += keep * (z_src - mean)
    return out
