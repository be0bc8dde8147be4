"""Confidence limits of the features the CSC publishes errors for (sql/seeds/confidence_limits.csv).

No real limits are at hand to calibrate against, so the model is chosen, stated in the params
file (`confidence_limits`, with its reasons) and in docs/warehouse.md#simulated-limits:

- the width follows the flux significance the simulator already draws: a 1-sigma error of
  `k / max(sig, sig_floor)` for the feature (the counts grow as sig², and an error as one over
  their root), times a log-normal scatter per detection and feature (exposure, background and
  off-axis blur the significance does not carry);
- hardness ratios: symmetric in atanh(HR), the error there growing as 1 / sqrt(1 - HR²) (the
  binomial error of the split of counts between two bands), so an interval stays inside
  [-1, 1] and turns asymmetric near ±1; powlaw_gamma likewise inside the range the simulator
  draws it from (calibration bounds), with a constant error in the atanh of its scaled value;
  bb_kt symmetric in ln kT, so always above 0 and longer on the hot side;
- the interval is ±1 sigma in that space (68.3 %, the CSC's documented level), and always
  contains the value; a NULL value has NULL limits.

The limits draw from their own stream (`draws.chunk_rng(seed, chunk, LIMITS_STREAM)`), after
every other column is final (injected outliers included): every other value of a catalogue
is what it was before the limits existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from xpipe.core.errors import InputError
from xpipe.simulation.latent import HARD_CLIP
from xpipe.warehouse.seeds import confidence_limits

HARDNESS = ("hard_hm", "hard_hs", "hard_ms")


def check_params(spec: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The params file's `confidence_limits` section, with a parameter for every feature."""
    if spec is None:
        raise InputError("params file has no confidence_limits section (a params file written "
                         "before the simulator drew confidence limits): regenerate it with "
                         "scripts/calibrate_simulator.py")
    missing = [f for f in confidence_limits() if f not in spec.get("k", {})]
    if missing:
        raise InputError(f"params file confidence_limits has no k for {', '.join(missing)}")
    return spec


def bounded_interval(x: np.ndarray, sigma: np.ndarray, lo: float, hi: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """x ∓ sigma in the atanh of x scaled to [-1, 1] on [lo, hi]: inside [lo, hi], wider on the
    side away from a bound; sigma is in units of that scaled atanh."""
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    z = np.arctanh(np.clip((x - mid) / half, -HARD_CLIP, HARD_CLIP))
    return mid + half * np.tanh(z - sigma), mid + half * np.tanh(z + sigma)


def draw_limits(rng: np.random.Generator, cols: Mapping[str, np.ndarray],
                spec: Mapping[str, Any], bounds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Lower and upper limit columns (NaN = null) for the features of the seed, from the final
    `cols`; one standard normal per detection and feature, in seed order, whatever is null."""
    sig = np.maximum(cols["flux_significance_b"], float(spec["sig_floor"]))
    out: dict[str, np.ndarray] = {}
    for feature, limit in confidence_limits().items():
        x = cols[feature]
        scatter = np.exp(float(spec["scatter_sd_ln"]) * rng.standard_normal(len(x)))
        sigma = float(spec["k"][feature]) / sig * scatter
        with np.errstate(invalid="ignore"):
            lo, hi = _interval(feature, x, sigma, bounds, float(spec["sigma_max"]))
            out[limit.lolim], out[limit.hilim] = np.fmin(lo, x), np.fmax(hi, x)
        out[limit.lolim][np.isnan(x)] = np.nan
        out[limit.hilim][np.isnan(x)] = np.nan
    return out


def _interval(feature: str, x: np.ndarray, sigma: np.ndarray, bounds: Mapping[str, Any],
              sigma_max: float) -> tuple[np.ndarray, np.ndarray]:
    """The 1-sigma interval of `feature` given its error `sigma` at the centre of its range,
    capped at `sigma_max` in the space where it is symmetric."""
    if feature in HARDNESS:
        binomial = np.sqrt(np.maximum(1.0 - x**2, 1.0 - HARD_CLIP**2))
        return bounded_interval(x, np.minimum(sigma / binomial, sigma_max), -1.0, 1.0)
    if feature == "powlaw_gamma":
        g_lo, g_hi = (float(b) for b in bounds["powlaw_gamma"])
        scaled = np.minimum(sigma * 2.0 / (g_hi - g_lo), sigma_max)
        return bounded_interval(x, scaled, g_lo, g_hi)
    if feature == "bb_kt":
        ln_sigma = np.minimum(sigma, sigma_max)
        return x * np.exp(-ln_sigma), x * np.exp(ln_sigma)
    raise InputError(f"the simulator has no model for the confidence limits of {feature}")
