"""Monte Carlo propagation of measurement errors through the classifier (pure math).

- Random streams: one counter-based generator (Philox) per detection, keyed by a BLAKE2b hash
  of its key and the seed, so a detection draws the same numbers alone or in a catalogue, in
  any chunk, on any number of threads, and in any process (Python's `hash()` is salted).
- Split normal: a value with lower and upper confidence limits is drawn from the two-piece
  normal with its mode at the value and σ_lo, σ_hi = the distances to the limits divided by
  the limits' z (1 for 68.27 % limits, 1.645 for 90 %). Each draw is the inverse CDF of one
  standard normal number, so widening the limits moves every draw monotonically away from the
  value (common random numbers), and a zero width gives the value itself, bit for bit.
- Summaries: per detection and class, the mean and the central intervals over the draws; per
  source and draw, the hard and soft votes (METHOD §7) and how often the outcome holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

# Central intervals reported per detection and class, and their quantiles.
INTERVALS = {"68": (0.16, 0.84), "95": (0.025, 0.975)}
UNCLASSIFIED = -1  # outcome / class code of a draw in which nothing is classified


def sigma_divisor(confidence_level: float) -> float:
    """z of a central interval: 1 for 0.6827 (1σ limits), 1.645 for 0.90."""
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {confidence_level}")
    return float(ndtri(0.5 + confidence_level / 2))


def stream_key(key: Sequence[object], seed: int) -> int:
    """The 128-bit Philox key of one detection: BLAKE2b of its key's text and the seed.

    None is written as an empty field and integers in decimal, so the same detection gets the
    same key from any source (a warehouse row, a file, a data frame)."""
    text = "\x1f".join("" if part is None else str(part) for part in (*key, int(seed)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "little")


def standard_normals(keys: Sequence[Sequence[object]], seed: int, n_draws: int,
                     n_columns: int) -> F64:
    """(n, n_draws, n_columns) standard normal numbers, row i from the stream of keys[i]; the
    first d draws are the same for any n_draws ≥ d."""
    out = np.empty((len(keys), n_draws, n_columns))
    for i, key in enumerate(keys):
        generator = np.random.Generator(np.random.Philox(key=stream_key(key, seed)))
        out[i] = generator.standard_normal((n_draws, n_columns))
    return out


def has_limits(value: F64, lower: F64, upper: F64) -> NDArray[np.bool_]:
    """Where a value has both confidence limits (NaN: missing)."""
    return ~(np.isnan(lower) | np.isnan(upper) | np.isnan(value))


def split_normal_sigmas(value: F64, lower: F64, upper: F64, divisor: float
                        ) -> tuple[F64, F64]:
    """σ_lo, σ_hi from confidence limits; a missing limit (NaN) on either side gives zero
    widths on both (the feature is held fixed). Limits must bracket the value."""
    usable = has_limits(value, lower, upper)
    low = np.where(usable, value - lower, 0.0) / divisor
    high = np.where(usable, upper - value, 0.0) / divisor
    return low, high


def split_normal(value: F64, sigma_lo: F64, sigma_hi: F64, z: F64) -> F64:
    """Split-normal draws by inverse CDF of standard normal numbers z (broadcast against the
    value). P(below the mode) = σ_lo / (σ_lo + σ_hi); zero widths return the value itself."""
    value, sigma_lo, sigma_hi, z = np.broadcast_arrays(value, sigma_lo, sigma_hi, z)
    total = sigma_lo + sigma_hi
    with np.errstate(invalid="ignore", divide="ignore"):
        p_low = np.where(total > 0, sigma_lo / total, 0.5)
        below = ndtr(z) < p_low
        tiny = np.finfo(np.float64).tiny
        # below the mode: Φ⁻¹(Φ(z) / (2 p)); above: −Φ⁻¹(Φ(−z) / (2 (1 − p))), both ≤ 0
        low_side = ndtri(np.clip(ndtr(z) / (2 * p_low), tiny, 0.5))
        high_side = -ndtri(np.clip(ndtr(-z) / (2 * (1 - p_low)), tiny, 0.5))
        step = np.where(below, sigma_lo * low_side, sigma_hi * high_side)
    side = np.where(below, sigma_lo, sigma_hi)
    return np.where(side > 0, value + step, value)


def clip_to_range(draws: F64, value: F64, minimum: float | None, maximum: float | None
                  ) -> F64:
    """Draws clipped to a physical range; where a draw equals its value (a feature held
    fixed) it is kept as it is, so a nominal value is never changed."""
    clipped = np.clip(draws, -np.inf if minimum is None else minimum,
                      np.inf if maximum is None else maximum)
    return np.where(draws == value, draws, clipped)


# -- per detection -------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionSummary:
    """Per detection (n) and class (C), over the draws in which it is classified."""

    mean: F64  # (n, C)
    quantiles: dict[str, tuple[F64, F64]]  # interval name → (lower, upper), each (n, C)
    pred_fraction: F64  # (n, C): share of all draws predicting the class
    unclassified_fraction: F64  # (n,)


def mean_over_draws(proba: F64, nominal: F64, classified: NDArray[np.bool_]) -> F64:
    """Mean over the classified draws, as nominal + mean(draw − nominal): exact (the nominal
    itself) when every draw reproduces it, clipped to [0, 1] against rounding; NaN where no
    draw is classified."""
    deviations = np.where(classified[..., None], proba - nominal[:, None, :], 0.0)
    counts = classified.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.clip(nominal + deviations.sum(axis=1) / counts[:, None], 0.0, 1.0)
    return np.where(counts[:, None] > 0, mean, np.nan)


def draw_quantiles(proba: F64, classified: NDArray[np.bool_], levels: Sequence[float]
                   ) -> list[F64]:
    """Quantiles over the classified draws (numpy's linear method), each (n, C)."""
    out = [np.empty(proba.shape[::2]) for _ in levels]
    complete = classified.all(axis=1)
    if complete.any():
        values = np.quantile(proba[complete], list(levels), axis=1)
        for q, array in zip(values, out, strict=True):
            array[complete] = q
    for i in np.flatnonzero(~complete):
        kept = proba[i, classified[i]]
        for level, array in zip(levels, out, strict=True):
            array[i] = np.quantile(kept, level, axis=0) if len(kept) else np.nan
    return out


def summarize_detections(proba: F64, codes: I64, nominal: F64) -> DetectionSummary:
    """proba (n, D, C) with NaN rows for unclassified draws, codes (n, D) the predicted
    class codes (-1 unclassified), nominal (n, C) the probabilities without errors."""
    n_classes = proba.shape[2]
    classified = codes >= 0
    levels = [q for pair in INTERVALS.values() for q in pair]
    values = draw_quantiles(proba, classified, levels)
    quantiles = {name: (values[2 * i], values[2 * i + 1]) for i, name in enumerate(INTERVALS)}
    n_draws = codes.shape[1]
    counts = np.stack([(codes == k).sum(axis=1) for k in range(n_classes)], axis=1)
    return DetectionSummary(mean_over_draws(proba, nominal, classified), quantiles,
                            counts / n_draws, 1.0 - classified.sum(axis=1) / n_draws)


# -- per source -----------------------------------------------------------------------------


def source_votes(proba: F64, codes: I64, starts: I64) -> tuple[I64, I64]:
    """Hard and soft votes of every source in every draw (METHOD §7), shapes (S, D).

    Rows are detections grouped by source (source s holds rows starts[s] to the next start)
    and, within a source, in detection order (obsid, then det_id): a hard-vote tie goes to the
    class whose first detection comes first, a soft-vote tie to the earlier class. Only the
    detections classified in a draw vote in it; -1 where none is.
    """
    n_rows, _, n_classes = proba.shape
    classified = codes >= 0
    position = (np.arange(n_rows) - np.repeat(starts, np.diff(np.r_[starts, n_rows])))
    hits = codes[..., None] == np.arange(n_classes)  # (n, D, C)
    counts = np.add.reduceat(hits.astype(np.int64), starts, axis=0)
    big = n_rows + 1
    first = np.minimum.reduceat(np.where(hits, position[:, None, None], big), starts, axis=0)
    hard = np.argmax(counts * big - first, axis=2)
    totals = np.add.reduceat(np.where(classified[..., None], proba, 0.0), starts, axis=0)
    voters = np.add.reduceat(classified.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        soft = np.argmax(totals / voters[..., None], axis=2)
    none = voters == 0
    return np.where(none, UNCLASSIFIED, hard), np.where(none, UNCLASSIFIED, soft)


def outcomes(hard: I64, soft: I64, n_classes: int) -> I64:
    """A source's outcome per draw: its class where the votes agree, `n_classes` (ambiguous)
    where they differ, -1 where nothing is classified."""
    return np.where(hard < 0, UNCLASSIFIED, np.where(hard == soft, hard, n_classes))


@dataclass(frozen=True)
class OutcomeSummary:
    """Per source: how often each draw's outcome equals the nominal one, and the most
    frequent other outcome (ties to the lower code; -1 sorts last), or None (-2)."""

    stability: F64
    other: I64  # -2 where every draw gives the nominal outcome
    other_fraction: F64


NO_OTHER = -2


def summarize_outcomes(draws: I64, nominal: I64, n_codes: int) -> OutcomeSummary:
    """draws (S, D) outcome codes in [-1, n_codes); nominal (S,)."""
    n_draws = draws.shape[1]
    shifted = draws + 1  # -1 → 0
    counts = np.stack([(shifted == c).sum(axis=1) for c in range(n_codes + 1)], axis=1)
    stability = counts[np.arange(len(nominal)), nominal + 1] / n_draws
    others = counts.copy()
    others[np.arange(len(nominal)), nominal + 1] = -1
    order = np.r_[np.arange(1, n_codes + 1), 0]  # classes, ambiguous, then unclassified
    best = order[np.argmax(others[:, order], axis=1)]
    best_count = others[np.arange(len(nominal)), best]
    other = np.where(best_count > 0, best - 1, NO_OTHER)
    return OutcomeSummary(stability, other, np.where(best_count > 0, best_count / n_draws,
                                                     np.nan))
