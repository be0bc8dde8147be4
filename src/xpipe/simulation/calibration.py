"""The params file (simulator_params.json) turned into the arrays the stages index.

The file keys everything by class name; the arrays are in CLASSES order (the seeds' order),
and loading fails if the file was fitted for other classes or features.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, ndtr

from xpipe.core.errors import InputError
from xpipe.simulation.config import default_params_path
from xpipe.simulation.draws import cdf
from xpipe.simulation.limits import check_params
from xpipe.simulation.vocabulary import AGG_CLASS, BANDS, CLASSES, FEATURES, OWN_OTYPE

_STATES = ("nonsym", "sym")  # group g = 2 * class + state: the min/max state of METHOD §2


@dataclass(frozen=True)
class Mixtures:
    """Gaussian mixtures in the latent space per class × state group, padded to k_max
    components and 12 dimensions (the symmetric state has no var_newq_b), with the marginal
    maps and the within-source blend."""

    comp_cdf: np.ndarray  # (groups, K)
    means: np.ndarray  # (groups, K, 12)
    chols: np.ndarray  # (groups, K, 12, 12), lower triangular
    chols_t: np.ndarray  # the transposes, contiguous for np.dot
    p_sym: np.ndarray  # (classes,) probability of the symmetric state
    k_max: int
    keep: np.ndarray  # (groups, K, 12) source share a of each dimension (see blend_latents)
    map_start: np.ndarray  # (classes, 12)
    map_step: np.ndarray  # (classes, 12)
    map_vals: np.ndarray  # (classes, 12, grid)
    state_redraw: float  # P(a later detection redraws its min/max state)
    faint_scale: float  # widening of the fresh part of faint detections


@dataclass(frozen=True)
class BrightnessModel:
    """Source and detection brightness latents and the significance they map to."""

    rho: float  # correlation of a detection's latent with its source's
    tail_shift: float  # sources with > 10 detections are brighter
    threshold: float  # latent above which a detection is selected (> 5 sigma, both fits)
    sel_q_p: np.ndarray
    sel_q_log: np.ndarray  # log significance quantiles of the selected rows
    faint_log_median: float
    faint_log_sd: float


@dataclass(frozen=True)
class RateModel:
    """Count rates per band, the medium band's variability and the min/max columns."""

    rate_mean: np.ndarray  # mean of (log significance, log broad rate)
    rate_cov: np.ndarray
    split_coef: np.ndarray  # (2, 3): log h/m and -log s/m on (1, atanh hm, atanh ms)
    split_chol: np.ndarray
    sum_sd: float  # log scatter of broad vs h + m + s
    m_prob: np.ndarray
    m_prob_sd: float
    m_ratio: np.ndarray
    m_ratio_sd: float
    mm_probs: np.ndarray
    mm: dict[str, tuple[float, float, float, np.ndarray]]  # per band, see columns.min_max


@dataclass(frozen=True)
class Calibration:
    """Everything a chunk draws from."""

    sha256: str  # of the params file, for the manifest
    class_cdf: np.ndarray
    bounds: dict[str, Any]
    zero_ratio: np.ndarray  # P(var_ratio = 0) for bands b, h, s
    det_cdf: np.ndarray  # detections per source
    det_mean: float
    mix: Mixtures
    brightness: BrightnessModel
    rates: RateModel
    nulls: dict[str, Any]
    sky: dict[str, Any]
    simbad: dict[str, Any]
    limits: Mapping[str, Any]  # the confidence limits' model (simulation.limits)


def load_calibration(path: Path | None) -> Calibration:
    """The calibration in a params file (default: the packaged one), with the file's sha256."""
    path = default_params_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"simulator params not found at {path}; run scripts/calibrate_simulator.py"
        )
    raw = path.read_bytes()
    return build_calibration(json.loads(raw), hashlib.sha256(raw).hexdigest())


def build_calibration(params: dict[str, Any], sha256: str) -> Calibration:
    """Fails on a params file fitted for other classes, features or SIMBAD codes than the
    seeds list, since its arrays would then be read under the wrong names."""
    if (
        tuple(params["classes"]) != CLASSES
        or tuple(params["features"]) != FEATURES
        or params.get("agg_class", AGG_CLASS) != AGG_CLASS
    ):
        raise InputError("params file lists other classes or features than the seeds")
    missing = set(OWN_OTYPE.values()) - set(params["simbad"]["otype_codes"])
    if missing:
        raise InputError(f"params file lacks the seeds' SIMBAD codes {sorted(missing)}")
    det_cdf = cdf(detections_per_source_pmf(params["detections_per_source"]))
    return Calibration(
        sha256=sha256,
        class_cdf=cdf([params["class_proportions"][c] for c in CLASSES]),
        bounds=params["bounds"],
        zero_ratio=np.array([params["zero_ratio_fraction"][b] for b in ("b", "h", "s")]),
        det_cdf=det_cdf,
        det_mean=float(np.sum(np.arange(1, len(det_cdf) + 1) * np.diff(det_cdf, prepend=0.0))),
        mix=_mixtures(params),
        brightness=_brightness(params),
        rates=_rates(params),
        nulls=params["nulls"],
        sky=params["sky"],
        simbad=params["simbad"],
        limits=check_params(params.get("confidence_limits")),
    )


def detections_per_source_pmf(dist: Mapping[str, Any]) -> np.ndarray:
    """P(k detections), k = 1..k_max: CSC 2.0's shares of 1, 2, 3-10 and >10, a geometric
    decay inside 3-10 and a power law k^-alpha inside 11..k_max (see the params file)."""
    k_max = int(dist["tail_k_max"])
    pmf = np.zeros(k_max)
    pmf[0], pmf[1] = dist["p_1"], dist["p_2"]
    mid = float(dist["r_3_10"]) ** np.arange(8)
    pmf[2:10] = dist["p_3_10"] * mid / mid.sum()
    tail = np.arange(11, k_max + 1, dtype=float) ** -float(dist["tail_alpha"])
    pmf[10:] = dist["p_gt_10"] * tail / tail.sum()
    return pmf / pmf.sum()


def _mixtures(params: Mapping[str, Any]) -> Mixtures:
    gmm = params["gmm"]
    k_max = max(len(gmm[c][s]["weights"]) for c in CLASSES for s in _STATES)
    n_groups = 2 * len(CLASSES)
    comp_cdf = np.ones((n_groups, k_max))
    means = np.zeros((n_groups, k_max, 12))
    chols = np.zeros((n_groups, k_max, 12, 12))
    p_sym = np.array([gmm[c]["p_sym"] for c in CLASSES])
    for ci, c in enumerate(CLASSES):
        for si, state in enumerate(_STATES):
            g = 2 * ci + si
            _fill_group(
                gmm[c][state], 12 if state == "nonsym" else 11, comp_cdf[g], means[g], chols[g]
            )
    maps = _marginal_maps(means, chols, comp_cdf, p_sym, params["latent_quantiles"])
    ws = params["within_source"]
    return Mixtures(
        comp_cdf=comp_cdf,
        means=means,
        chols=chols,
        chols_t=np.ascontiguousarray(np.swapaxes(chols, -1, -2)),
        p_sym=p_sym,
        k_max=k_max,
        keep=_keep(chols, ws["chol"]),
        map_start=maps[0],
        map_step=maps[1],
        map_vals=maps[2],
        state_redraw=float(ws["state_redraw_probability"]),
        faint_scale=float(ws["faint_noise_scale"]),
    )


def _fill_group(
    g: Mapping[str, Any], d: int, comp_cdf: np.ndarray, means: np.ndarray, chols: np.ndarray
) -> None:
    """One group's weights, means and Cholesky factors (packed lower triangles of d × d)."""
    w = np.asarray(g["weights"], dtype=float)
    comp_cdf[: len(w)] = cdf(w)
    tril = np.tril_indices(d)
    for k in range(len(w)):
        means[k, :d] = g["means"][k]
        chol = np.zeros((d, d))
        chol[tril] = g["chol"][k]
        chols[k, :d, :d] = chol


def _keep(chols: np.ndarray, within_chol: list[float]) -> np.ndarray:
    """keep[g, k, i] = sqrt(1 - within variance / component variance), floored at 0."""
    wchol = np.zeros((12, 12))
    wchol[np.tril_indices(12)] = within_chol
    comp_var = np.einsum("gkij,gkij->gki", chols, chols)
    within_var = np.diag(wchol @ wchol.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(comp_var > 0, within_var / comp_var, 1.0)
    return np.sqrt(np.clip(1.0 - ratio, 0.0, 1.0))


def _marginal_maps(
    means: np.ndarray,
    chols: np.ndarray,
    comp_cdf: np.ndarray,
    p_sym: np.ndarray,
    latent_q: Mapping[str, Any],
    n_grid: int = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class and latent dimension, a monotone map on a uniform grid taking the mixture's
    marginal CDF onto the data's marginal quantiles: x -> Q_data(F_mixture(x)).

    The mixtures carry the dependence between features; this makes each class marginal match
    the calibration data (a mixture with 1-2 components cannot follow skewed marginals).
    Returns (start, step, values) with values of shape (classes, 12, n_grid).
    """
    nc = len(CLASSES)
    probs = np.asarray(latent_q["probs"], dtype=float)
    start = np.empty((nc, 12))
    step = np.empty((nc, 12))
    vals = np.empty((nc, 12, n_grid))
    weights = np.diff(comp_cdf, axis=1, prepend=0.0)  # (2 nc, K)
    sd = np.sqrt(np.einsum("gkij,gkij->gki", chols, chols))  # (2 nc, K, 12)
    for ci, c in enumerate(CLASSES):
        q = np.asarray(latent_q["classes"][c], dtype=float)  # (12, P)
        g_non, g_sym = 2 * ci, 2 * ci + 1
        for i in range(12):
            groups = [(g_non, 1.0 - p_sym[ci])] + ([(g_sym, p_sym[ci])] if i < 11 else [])
            w = np.concatenate([weights[g] * share for g, share in groups])
            mu = np.concatenate([means[g, :, i] for g, _ in groups])
            s = np.concatenate([sd[g, :, i] for g, _ in groups])
            live = (w > 0) & (s > 0)
            w, mu, s = w[live] / w[live].sum(), mu[live], s[live]
            x = np.linspace((mu - 6 * s).min(), (mu + 6 * s).max(), n_grid)
            mixture_cdf = (w * ndtr((x[:, None] - mu) / s)).sum(axis=1)
            start[ci, i], step[ci, i] = x[0], x[1] - x[0]
            vals[ci, i] = np.interp(mixture_cdf, probs, q[i])
    return start, step, vals


def _brightness(params: Mapping[str, Any]) -> BrightnessModel:
    br, sig = params["brightness"], params["significance"]
    return BrightnessModel(
        rho=float(br["rho"]),
        tail_shift=float(br["tail_shift"]),
        threshold=float(br["threshold"]),
        sel_q_p=np.asarray(sig["selected_probs"], dtype=float),
        sel_q_log=np.asarray(sig["selected_log_quantiles"], dtype=float),
        faint_log_median=math.log(float(sig["faint_median"])),
        faint_log_sd=float(sig["faint_sigma_ln"]),
    )


def _rates(params: Mapping[str, Any]) -> RateModel:
    rates, bm, mm = params["rates"], params["band_m"], params["min_max"]
    split = rates["band_split"]
    return RateModel(
        rate_mean=np.asarray(rates["log_sig_log_mean_b"]["mean"], dtype=float),
        rate_cov=np.asarray(rates["log_sig_log_mean_b"]["cov"], dtype=float),
        split_coef=np.asarray(split["coef"], dtype=float),
        split_chol=np.linalg.cholesky(np.asarray(split["resid_cov"], dtype=float)),
        sum_sd=float(rates["broad_vs_sum_sigma_ln"]),
        m_prob=np.asarray(bm["logit_prob"]["coef"], dtype=float),
        m_prob_sd=float(bm["logit_prob"]["resid_sd"]),
        m_ratio=np.asarray(bm["log_ratio"]["coef"], dtype=float),
        m_ratio_sd=float(bm["log_ratio"]["resid_sd"]),
        mm_probs=np.asarray(mm["f_probs"], dtype=float),
        mm={b: _min_max_band(mm["bands"][b]) for b in BANDS},
    )


def _min_max_band(spec: Mapping[str, Any]) -> tuple[float, float, float, np.ndarray]:
    """(P(symmetric), mean and sd of log newq, quantiles of the half-width fraction f)."""
    return (
        float(spec["p_sym"]),
        float(spec["log_newq_mean"]),
        float(spec["log_newq_sd"]),
        expit(np.asarray(spec["logit_f_quantiles"], dtype=float)),
    )
