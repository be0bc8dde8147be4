"""Sources and their classes, how many detections each has, and how bright each detection
is: its significance, whether it passes the paper's selection and which spectral fits it
has."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from xpipe.simulation.calibration import BrightnessModel, Calibration
from xpipe.simulation.draws import choose


@dataclass(frozen=True)
class Sources:
    """The sources of a chunk and the detections they own (contiguous, source by source)."""

    counts: np.ndarray  # detections per source
    cls: np.ndarray  # class index per source (into CLASSES)
    src: np.ndarray  # source index per detection
    k: np.ndarray  # rank of each detection within its source (0 = first)

    @property
    def c_det(self) -> np.ndarray:
        """Class index per detection."""
        return self.cls[self.src]


@dataclass(frozen=True)
class Brightness:
    """Per detection: significance, the paper's selection and which spectral fits exist."""

    sig: np.ndarray  # flux_significance_b
    selected: np.ndarray  # > 5 sigma with both fits (what paper_selection finds again)
    gamma_ok: np.ndarray  # powlaw_gamma present
    bb_ok: np.ndarray  # bb_kt present


def draw_sources(rng: np.random.Generator, calibration: Calibration, n_det: int) -> Sources:
    counts = source_counts(rng, calibration.det_cdf, calibration.det_mean, n_det)
    n_src = len(counts)
    cls = choose(rng, calibration.class_cdf, n_src)
    starts = np.cumsum(counts) - counts
    src = np.repeat(np.arange(n_src), counts)
    return Sources(counts=counts, cls=cls, src=src, k=np.arange(n_det) - starts[src])


def source_counts(
    rng: np.random.Generator, det_cdf: np.ndarray, det_mean: float, n_det: int
) -> np.ndarray:
    """Detections per source summing to exactly n_det (the last source is truncated)."""
    counts: list[np.ndarray] = []
    total = 0
    while total < n_det:
        batch = int((n_det - total) / det_mean * 1.05) + 16
        draw = choose(rng, det_cdf, batch) + 1
        counts.append(draw)
        total += int(draw.sum())
    out = np.concatenate(counts)
    csum = np.cumsum(out)
    last = int(np.searchsorted(csum, n_det))
    out = out[: last + 1]
    out[last] -= int(csum[last]) - n_det
    return out


def draw_brightness(rng: np.random.Generator, calibration: Calibration, sources: Sources
                    ) -> Brightness:
    """A source brightness latent shared (with correlation rho) by its detections; above the
    threshold a detection is selected, below it is faint and its fits are sparse."""
    bm = calibration.brightness
    n_det = len(sources.src)
    u_src = rng.standard_normal(len(sources.counts)) + np.where(
        sources.counts > 10, bm.tail_shift, 0.0
    )
    u_det = bm.rho * u_src[sources.src] + math.sqrt(1 - bm.rho**2) * rng.standard_normal(n_det)
    selected = u_det > bm.threshold
    sig = significance(bm, u_det, selected)
    gamma_ok, bb_ok = _spectral_fits(rng, calibration.nulls["faint_fits"], selected, sig)
    return Brightness(sig=sig, selected=selected, gamma_ok=gamma_ok, bb_ok=bb_ok)


def significance(bm: BrightnessModel, u_det: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """flux_significance_b from the brightness latent: the selected tail follows the real
    significance quantiles above 5, the rest a faint log-normal; both monotone in u."""
    t = bm.threshold
    sig = np.empty(len(u_det))
    tail = ndtr(-t)
    v_sel = 1.0 - ndtr(-u_det[selected]) / tail
    sig[selected] = np.exp(np.interp(v_sel, bm.sel_q_p, bm.sel_q_log))
    v_faint = np.clip(ndtr(u_det[~selected]) / ndtr(t), 1e-12, 1 - 1e-12)
    sig[~selected] = np.exp(bm.faint_log_median + bm.faint_log_sd * ndtri(v_faint))
    return np.maximum(sig, 1e-3)


def _spectral_fits(
    rng: np.random.Generator, fit_n: Mapping[str, Any], selected: np.ndarray, sig: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(powlaw_gamma present, bb_kt present). Faint rows: > 5 sigma but no spectral fit (or
    only one of the two), or <= 5 sigma and occasionally fitted; selected rows have both."""
    n_det = len(sig)
    u_fit = rng.random(n_det)
    hi_sig = sig > 5.0
    lo_both = (~selected) & (~hi_sig) & (u_fit < fit_n["low_sig_both"])
    lo_one = (
        (~selected)
        & (~hi_sig)
        & (u_fit >= fit_n["low_sig_both"])
        & (u_fit < fit_n["low_sig_both"] + fit_n["low_sig_one"])
    )
    hi_one = (~selected) & hi_sig & (u_fit < fit_n["high_sig_one"])
    one = lo_one | hi_one
    gamma_ok = selected | lo_both | (one & (rng.random(n_det) < 0.5))
    bb_ok = selected | lo_both | (one & ~gamma_ok)
    return gamma_ok, bb_ok
