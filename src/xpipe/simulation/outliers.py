"""Injected outliers: selected detections of unmatched sources rewritten to fit no class,
listed in their own table, so the anomaly score can be tested against known answers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xpipe.simulation.draws import log_uniform
from xpipe.simulation.features import derive_features
from xpipe.simulation.vocabulary import FEATURES

OUTLIER_KINDS: tuple[str, ...] = ("transient", "spectral")
_COPIED = (
    "hard_hm",
    "hard_hs",
    "hard_ms",
    "powlaw_gamma",
    "bb_kt",
    "var_prob_b",
    "var_prob_h",
    "var_prob_s",
)  # features that are raw columns as they are
_IDX = {name: i for i, name in enumerate(FEATURES)}


def inject_outliers(
    rng: np.random.Generator, cols: dict[str, np.ndarray], eligible: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Turn about `fraction` of the `eligible` detections into sources that fit no class.

    Every feature starts as the value of a random complete detection, drawn column by column;
    then a "transient" becomes a strong flare (variable in every band, variability ratios
    15-34, var_newq_b 30-600) and a "spectral" outlier an extreme, inconsistent spectrum
    (hard_hm 0.85-0.99 with hard_ms -0.99 to -0.85, powlaw_gamma 7-9.8, bb_kt 20-120 keV).
    Values stay inside the ranges the simulator otherwise produces: only their combination
    fits no class. The raw columns (`cols`, modified in place) are rewritten so the derived
    features are exactly these. Returns the rows and their kind codes (into OUTLIER_KINDS).
    """
    complete = np.flatnonzero(eligible)
    donors = derive_features({k: v[complete] for k, v in cols.items()})
    donors = donors[np.all(np.isfinite(donors), axis=1)]
    rows = np.flatnonzero(eligible & (rng.random(len(eligible)) < fraction))
    if len(rows) == 0 or len(donors) == 0:
        return rows[:0], rows[:0]
    f, kinds = _outlier_features(rng, donors, len(rows))
    _write_features(rng, cols, rows, f)
    return rows, kinds


def _outlier_features(
    rng: np.random.Generator, donors: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) features of the outliers and their kinds."""
    f = donors[rng.integers(0, len(donors), (n, len(FEATURES))), np.arange(len(FEATURES))]
    kinds = rng.integers(0, len(OUTLIER_KINDS), n)
    flare, spectral = kinds == 0, kinds == 1
    for band in "bhs":
        f[flare, _IDX[f"var_prob_{band}"]] = 1.0
        f[flare, _IDX[f"var_ratio_{band}"]] = log_uniform(rng, 15.0, 34.0, int(flare.sum()))
    f[flare, _IDX["var_newq_b"]] = log_uniform(rng, 30.0, 600.0, int(flare.sum()))
    m = int(spectral.sum())
    f[spectral, _IDX["hard_hm"]] = rng.uniform(0.85, 0.99, m)
    f[spectral, _IDX["hard_ms"]] = rng.uniform(-0.99, -0.85, m)
    f[spectral, _IDX["hard_hs"]] = rng.uniform(-0.2, 0.2, m)
    f[spectral, _IDX["powlaw_gamma"]] = rng.uniform(7.0, 9.8, m)
    f[spectral, _IDX["bb_kt"]] = log_uniform(rng, 20.0, 120.0, m)
    return f, kinds


def _write_features(
    rng: np.random.Generator, cols: dict[str, np.ndarray], rows: np.ndarray, f: np.ndarray
) -> None:
    """Raw columns of `rows` (in place) whose derived features are `f`."""
    for name in _COPIED:
        cols[name][rows] = f[:, _IDX[name]]
    for band in "bhs":
        mean = cols[f"var_mean_{band}"][rows]
        mean = np.where(np.isfinite(mean) & (mean > 0), mean, 1e-3)
        cols[f"var_mean_{band}"][rows] = mean
        cols[f"var_sigma_{band}"][rows] = f[:, _IDX[f"var_ratio_{band}"]] * mean
    centre = f[:, _IDX["var_newq_b"]] * cols["var_mean_b"][rows]
    half = rng.uniform(0.1, 0.9, len(rows)) * centre
    cols["var_min_b"][rows] = centre - half
    cols["var_max_b"][rows] = centre + half


def outlier_table(
    names_src: pa.Array,
    src: np.ndarray,
    rows: np.ndarray,
    kinds: np.ndarray,
    *,
    obs: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> pa.Table:
    """The outliers' detection keys (name, obsid, obi, region_id) and kinds."""
    obsid, obi, region_id = obs
    return pa.table(
        {
            "name": pc.take(names_src, pa.array(src[rows])),
            "obsid": pa.array(obsid[rows], type=pa.int32()),
            "obi": pa.array(obi[rows], type=pa.int16()),
            "region_id": pa.array(region_id[rows], type=pa.int32()),
            "kind": pa.array(np.array(OUTLIER_KINDS)[kinds].tolist(), type=pa.string()),
        }
    )
