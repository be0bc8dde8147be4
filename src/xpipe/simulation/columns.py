"""The raw CSC columns of each detection from its features: count rates per band, which
values are null or zero (the mechanisms that drop rows from the paper's selection), the
variability columns (prob, sigma, mean, min, max per band) and the spectral columns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, logit

from xpipe.simulation.calibration import Calibration, RateModel
from xpipe.simulation.draws import cdf, choose
from xpipe.simulation.latent import HARD_CLIP, PROB_EPS, PROB_FLOOR
from xpipe.simulation.sources import Brightness
from xpipe.simulation.vocabulary import BANDS, VAR_STATS

_DROP_BANDS = ("b", "h", "s")  # the bands whose features the paper uses
PerBand = dict[str, np.ndarray]  # one array per band letter


@dataclass(frozen=True)
class Nulls:
    """Which values of each detection are null (or a zero mean count rate)."""

    band_null: PerBand  # every variability column of the band
    mean_zero: PerBand  # var_mean (and with it sigma, min, max) is 0
    prob_null: PerBand  # var_prob only
    hard_all: np.ndarray  # all three hardness ratios
    hard_one: np.ndarray  # one of them, hard_* number `which_hard`
    which_hard: np.ndarray


def count_rates(
    rng: np.random.Generator, rates: RateModel, sig: np.ndarray, x: np.ndarray
) -> PerBand:
    """var_mean of the h, m and s bands: the broad rate follows the significance (a
    bivariate log-normal), its split over the bands follows the hardness ratios."""
    n_det = len(sig)
    log_sig = np.log(sig)
    m_sig, m_rate = rates.rate_mean
    c = rates.rate_cov
    cond_mu = m_rate + c[0, 1] / c[0, 0] * (log_sig - m_sig)
    cond_sd = math.sqrt(max(c[1, 1] - c[0, 1] ** 2 / c[0, 0], 1e-12))
    log_rate_b = cond_mu + cond_sd * rng.standard_normal(n_det)
    at_hm = np.arctanh(np.clip(x[:, 0], -HARD_CLIP, HARD_CLIP))
    at_ms = np.arctanh(np.clip(x[:, 2], -HARD_CLIP, HARD_CLIP))
    design = np.stack([np.ones(n_det), at_hm, at_ms], axis=1)
    y = design @ rates.split_coef.T + rng.standard_normal((n_det, 2)) @ rates.split_chol.T
    w_h, w_s = np.exp(y[:, 0]), np.exp(-y[:, 1])  # h/m and s/m
    rate_m = np.exp(log_rate_b) / (1.0 + w_h + w_s)
    return {"h": rate_m * w_h, "m": rate_m, "s": rate_m * w_s}


def draw_nulls(rng: np.random.Generator, nulls: Mapping[str, Any], selected: np.ndarray) -> Nulls:
    """Faint rows are often null; a share of selected rows loses one feature through one of
    the mechanisms CSC shows (a null band, a zero mean rate, a null prob, null hardness)."""
    n_det = len(selected)
    drop = selected & (rng.random(n_det) < nulls["selected_drop_fraction"])
    mech = choose(rng, cdf(list(nulls["drop_mechanisms"].values())), n_det)
    mech_names = list(nulls["drop_mechanisms"])
    drop_band = np.array(_DROP_BANDS)[choose(rng, cdf(nulls["drop_band_weights"]), n_det)]

    def dropped(mechanism: str, band: str | None = None) -> np.ndarray:
        hit = drop & (mech == mech_names.index(mechanism))
        return hit if band is None else hit & (drop_band == band)

    faint, fb = ~selected, nulls["faint"]
    band_null, mean_zero, prob_null = {}, {}, {}
    for b in BANDS:
        band_null[b] = faint & (rng.random(n_det) < fb["band_null"][b])
        mean_zero[b] = faint & ~band_null[b] & (rng.random(n_det) < fb["mean_zero"][b])
        prob_null[b] = faint & ~band_null[b] & (rng.random(n_det) < fb["prob_null"][b])
        if b in _DROP_BANDS:
            band_null[b] |= dropped("var_band_null", b)
            mean_zero[b] |= dropped("var_mean_zero", b)
            prob_null[b] |= dropped("var_prob_null", b)
    band_null["m"] |= selected & (rng.random(n_det) < nulls["selected_band_m_null"])
    hard_all = faint & (rng.random(n_det) < fb["hardness_all_null"])
    hard_one = faint & ~hard_all & (rng.random(n_det) < fb["hardness_one_null"])
    hard_drop = dropped("hardness_null")
    hard_all |= hard_drop & (rng.random(n_det) < 0.6)
    hard_one |= hard_drop & ~hard_all
    which_hard = (rng.random(n_det) * 3).astype(np.int64)
    return Nulls(band_null, mean_zero, prob_null, hard_all, hard_one, which_hard)


def zero_means(
    rng: np.random.Generator, rates: RateModel, mean: PerBand, mean_zero: PerBand
) -> PerBand:
    """Zero the means the null pattern asks for; the broad band is the sum of the others
    with a little scatter (or zero)."""
    out = {b: np.where(mean_zero[b] | mean_zero["b"], 0.0, mean[b]) for b in ("h", "m", "s")}
    rate_sum = out["h"] + out["m"] + out["s"]
    out["b"] = np.where(
        mean_zero["b"], 0.0, rate_sum * np.exp(rates.sum_sd * rng.standard_normal(len(rate_sum)))
    )
    return out


def variability_columns(
    rng: np.random.Generator,
    calibration: Calibration,
    x: np.ndarray,
    sym: np.ndarray,
    *,
    mean: PerBand,
    nulls: Nulls,
) -> dict[str, np.ndarray]:
    """var_{prob,sigma,mean,min,max}_{b,h,m,s}; the medium band, which has no feature, is
    regressed on the hard and soft bands."""
    rates = calibration.rates
    ratio = {"b": x[:, 6], "h": x[:, 8], "s": x[:, 10]}
    prob = {"b": x[:, 5], "h": x[:, 7], "s": x[:, 9]}
    prob["m"] = _band_m_prob(rng, rates, prob["h"], prob["s"])
    ratio["m"] = _band_m_ratio(rng, rates, ratio["h"], ratio["s"],
                               calibration.bounds["var_ratio_max"])
    cols: dict[str, np.ndarray] = {}
    for b in BANDS:
        sigma = ratio[b] * mean[b]
        sym_b, newq = (sym, x[:, 11]) if b == "b" else (None, None)
        lo, hi = min_max(rng, rates.mm[b], rates.mm_probs, mean[b], sigma, sym=sym_b, newq=newq)
        vals = {"prob": prob[b].copy(), "sigma": sigma, "mean": mean[b], "min": lo, "max": hi}
        vals["prob"][nulls.prob_null[b]] = np.nan
        for stat in VAR_STATS:
            v = vals[stat]
            v[nulls.band_null[b]] = np.nan
            cols[f"var_{stat}_{b}"] = v
    return cols


def _band_m_prob(
    rng: np.random.Generator, rates: RateModel, prob_h: np.ndarray, prob_s: np.ndarray
) -> np.ndarray:
    lp_h = logit(np.clip(prob_h, PROB_FLOOR, 1 - PROB_EPS))
    lp_s = logit(np.clip(prob_s, PROB_FLOOR, 1 - PROB_EPS))
    prob_m = expit(
        rates.m_prob[0]
        + rates.m_prob[1] * lp_h
        + rates.m_prob[2] * lp_s
        + rates.m_prob_sd * rng.standard_normal(len(prob_h))
    )
    prob_m[prob_m >= 1 - PROB_EPS] = 1.0
    return prob_m


def _band_m_ratio(
    rng: np.random.Generator,
    rates: RateModel,
    ratio_h: np.ndarray,
    ratio_s: np.ndarray,
    ratio_max: float,
) -> np.ndarray:
    lr_h, lr_s = np.log(np.maximum(ratio_h, 1e-9)), np.log(np.maximum(ratio_s, 1e-9))
    return np.exp(
        np.minimum(
            rates.m_ratio[0]
            + rates.m_ratio[1] * lr_h
            + rates.m_ratio[2] * lr_s
            + rates.m_ratio_sd * rng.standard_normal(len(ratio_h)),
            math.log(ratio_max),
        )
    )


def min_max(
    rng: np.random.Generator,
    mm: tuple[float, float, float, np.ndarray],
    probs: np.ndarray,
    mean: np.ndarray,
    sigma: np.ndarray,
    *,
    sym: np.ndarray | None,
    newq: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """var_min/var_max: symmetric blocks give mean ∓ sigma (newq = 1 exactly, as in CSC);
    otherwise (max + min)/2 = newq × mean with half-width f × that, so min >= 0 <= max.
    `sym` and `newq` are drawn here unless given (the broad band takes its features')."""
    n = len(mean)
    p_sym, q_mu, q_sd, f_quantiles = mm
    if sym is None:
        sym = (rng.random(n) < p_sym) & (sigma < mean)
    if newq is None:
        newq = np.exp(q_mu + q_sd * rng.standard_normal(n))
    f = np.interp(rng.random(n), probs, f_quantiles)
    with np.errstate(invalid="ignore"):
        centre = np.where(sym, mean, newq * mean)  # newq is NaN only where sym
    half = np.where(sym, sigma, f * centre)
    return centre - half, centre + half


def spectral_columns(x: np.ndarray, brightness: Brightness, nulls: Nulls) -> dict[str, np.ndarray]:
    """flux_significance_b, the hardness ratios and the two spectral fit parameters."""
    cols = {"flux_significance_b": brightness.sig}
    for j, feat in enumerate(("hard_hm", "hard_hs", "hard_ms")):
        v = x[:, j].copy()
        v[nulls.hard_all | (nulls.hard_one & (nulls.which_hard == j))] = np.nan
        cols[feat] = v
    cols["powlaw_gamma"] = np.where(brightness.gamma_ok, x[:, 3], np.nan)
    cols["bb_kt"] = np.where(brightness.bb_ok, x[:, 4], np.nan)
    return cols
