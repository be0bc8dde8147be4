"""The 12 features of METHOD §2 from the raw columns, and the paper's row selection: what
the pipeline computes, done here again to check the bookkeeping and to seed outliers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from xpipe.simulation.vocabulary import FEATURES


def _null_or_zero_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN (null) where den is 0 or either side null, never inf (METHOD §2)."""
    ok = np.isfinite(num) & np.isfinite(den) & (den != 0)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=ok)
    return out


def derive_features(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 12 features of METHOD §2 from raw columns (NaN = null) as an (n, 12) array."""
    out = np.empty((len(cols["hard_hm"]), len(FEATURES)))
    for i, feat in enumerate(FEATURES):
        if feat.startswith("var_ratio_"):
            band = feat[-1]
            out[:, i] = _null_or_zero_div(cols[f"var_sigma_{band}"], cols[f"var_mean_{band}"])
        elif feat == "var_newq_b":
            mid = (cols["var_max_b"] + cols["var_min_b"]) / 2.0
            out[:, i] = _null_or_zero_div(mid, cols["var_mean_b"])
        else:
            out[:, i] = cols[feat]
    return out


def paper_selection(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """The paper's row selection: flux_significance_b > 5 and both spectral fits present."""
    sig = cols["flux_significance_b"]
    return (
        np.isfinite(sig)
        & (np.nan_to_num(sig) > 5.0)
        & np.isfinite(cols["powlaw_gamma"])
        & np.isfinite(cols["bb_kt"])
    )
