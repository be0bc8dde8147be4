"""Simulate a CSC-2.0-like per-detection table, a SIMBAD-like object table and the truth.

Why: the pipeline has to be exercised at scales the real catalogue cannot reach (10^8
detections) and against known answers the published tables cannot give. Every distribution
used here is either fitted on the real reference tables by `scripts/calibrate_simulator.py`
or chosen and stated, with its reason, in `data/simulator_params.json`, so a run is a
plausible stand-in for CSC 2.0 rather than random numbers of the right type.

Generation is chunked: chunk j draws from its own `SeedSequence(seed, spawn_key=(j,))`
stream and only one chunk's arrays are alive at a time, so memory is O(chunk_detections)
and output is byte-identical for a given config.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.special import expit, logit, ndtr, ndtri

__all__ = [
    "AGG_CLASS",
    "CLASSES",
    "DETECTION_SCHEMA",
    "FEATURES",
    "OUTLIER_KINDS",
    "OWN_OTYPE",
    "SIMBAD_SCHEMA",
    "TRUTH_SCHEMA",
    "SimulationConfig",
    "apply_uniform_maps",
    "blend_latents",
    "chunk_residues",
    "csc_name_cells",
    "csc_names",
    "default_params_path",
    "derive_features",
    "detections_per_source_pmf",
    "features_to_latent",
    "galactic_to_icrs",
    "icrs_to_galactic",
    "inject_outliers",
    "latent_to_features",
    "nudge_to_residue",
    "offset_positions",
    "paper_selection",
    "simulate_catalogue",
]

# --------------------------------------------------------------------------------------
# Vocabulary (METHOD §2, §5, §7)
# --------------------------------------------------------------------------------------

CLASSES: tuple[str, ...] = (
    "QSO",
    "AGN",
    "Seyfert_1",
    "Seyfert_2",
    "HMXB",
    "LMXB",
    "XB",
    "YSO",
    "TTau*",
    "Orion_V*",
)
AGG_CLASS: dict[str, str] = {
    "QSO": "AGN",
    "AGN": "AGN",
    "Seyfert_1": "Seyfert",
    "Seyfert_2": "Seyfert",
    "HMXB": "XB",
    "LMXB": "XB",
    "XB": "XB",
    "YSO": "YSO",
    "TTau*": "YSO",
    "Orion_V*": "YSO",
}
OWN_OTYPE: dict[str, str] = {
    "QSO": "QSO",
    "AGN": "AGN",
    "Seyfert_1": "Sy1",
    "Seyfert_2": "Sy2",
    "HMXB": "HXB",
    "LMXB": "LXB",
    "XB": "XB*",
    "YSO": "Y*O",
    "TTau*": "TT*",
    "Orion_V*": "Or*",
}
FEATURES: tuple[str, ...] = (
    "hard_hm",
    "hard_hs",
    "hard_ms",
    "powlaw_gamma",
    "bb_kt",
    "var_prob_b",
    "var_ratio_b",
    "var_prob_h",
    "var_ratio_h",
    "var_prob_s",
    "var_ratio_s",
    "var_newq_b",
)
BANDS: tuple[str, ...] = ("b", "h", "m", "s")
_VAR_STATS = ("prob", "sigma", "mean", "min", "max")

DETECTION_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("obsid", pa.int32()),
        ("obi", pa.int16()),
        ("region_id", pa.int32()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("flux_significance_b", pa.float64()),
        ("hard_hm", pa.float64()),
        ("hard_hs", pa.float64()),
        ("hard_ms", pa.float64()),
        ("powlaw_gamma", pa.float64()),
        ("bb_kt", pa.float64()),
    ]
    + [(f"var_{stat}_{band}", pa.float64()) for band in BANDS for stat in _VAR_STATS]
)
SIMBAD_SCHEMA = pa.schema(
    [("main_id", pa.string()), ("otype", pa.string()), ("ra", pa.float64()), ("dec", pa.float64())]
)
TRUTH_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("true_class", pa.string()),
        ("agg_class", pa.string()),
        ("simbad_main_id", pa.string()),
        ("simbad_otype", pa.string()),
    ]
)

# Latent-space transforms (shared with the calibration script so fit and sampling agree).
HARD_CLIP = 0.9995  # atanh(±0.9995) = ±4.1: keeps the ratios at CSC's ±0.999375 finite
PROB_EPS = 1e-4  # var_prob >= 1 - PROB_EPS is the exact 1 of CSC (a point mass in the data)
PROB_FLOOR = 1e-10  # var_prob below this is treated as this (a few rows reach 1e-234)
RATIO_FLOOR = 1e-6  # var_ratio below this (σ at rounding noise) is treated as this for the fit
_LATENT_MIN_RATIO = math.log(1e-9)
_LOGIT_TOP = math.log((1.0 - PROB_EPS) / PROB_EPS)

_MAX_INT32 = 2**31 - 1
_RA_CELLS = 864_000  # 0.1 s of time over 24 h
_DEC_CELLS = 324_000  # 1 arcsec over 90 deg
_ARCSEC = 1.0 / 3600.0

# ICRS -> galactic rotation (Hipparcos/ICRS definition, as in astropy); galactic -> ICRS is
# its transpose, so the hot path needs no astropy.
_ICRS_TO_GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669],
    ]
)


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Validated on construction so a bad value fails before any I/O."""

    n_detections: int
    seed: int = 42
    chunk_detections: int = 1_000_000  # generation unit; memory is O(chunk)
    match_fraction: float = 0.5  # fraction of sources with a SIMBAD counterpart
    wrong_type_fraction: float = 0.05  # matched sources whose SIMBAD type is a wrong class
    params_path: Path | None = None  # default: the packaged simulator_params.json
    # selected detections of sources without a counterpart turned into outliers (anomaly tests)
    outlier_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_detections", "seed", "chunk_detections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.n_detections < 1:
            raise ValueError(f"n_detections must be >= 1, got {self.n_detections}")
        if self.n_detections > _MAX_INT32 - 1:
            raise ValueError(
                f"n_detections must be < 2**31 - 1 (obsid and region_id are int32), "
                f"got {self.n_detections}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.chunk_detections < 1:
            raise ValueError(f"chunk_detections must be >= 1, got {self.chunk_detections}")
        if self.n_chunks > 999_999:
            raise ValueError(
                f"{self.n_chunks} chunks is too many (max 999,999); raise chunk_detections"
            )
        for name in ("match_fraction", "wrong_type_fraction", "outlier_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
            if not (0.0 <= float(value) <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.params_path is not None and not isinstance(self.params_path, str | Path):
            raise ValueError(f"params_path must be a path or None, got {self.params_path!r}")

    @property
    def chunk_size(self) -> int:
        """Detections per chunk (the last chunk may be smaller)."""
        return min(self.chunk_detections, self.n_detections)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_detections // min(self.chunk_detections, self.n_detections))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["params_path"] = None if self.params_path is None else str(self.params_path)
        return out


def default_params_path() -> Path:
    """The params file shipped with the package (written by scripts/calibrate_simulator.py)."""
    return Path(__file__).resolve().parent / "data" / "simulator_params.json"


# --------------------------------------------------------------------------------------
# Small pure functions for the math
# --------------------------------------------------------------------------------------


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


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _angles(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(v[..., 2], -1.0, 1.0)))
    return lon, lat


def galactic_to_icrs(l_deg: np.ndarray, b_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) -> ICRS (ra, dec) in degrees with a fixed rotation matrix."""
    return _angles(_unit_vectors(l_deg, b_deg) @ _ICRS_TO_GAL)


def icrs_to_galactic(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra, dec) -> galactic (l, b) in degrees."""
    return _angles(_unit_vectors(ra_deg, dec_deg) @ _ICRS_TO_GAL.T)


def offset_positions(
    ra_deg: np.ndarray, dec_deg: np.ndarray, radius_deg: np.ndarray, angle_rad: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Move each position by an angular distance along a position angle (exact on the sphere)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    r = np.radians(radius_deg)
    centre = _unit_vectors(ra_deg, dec_deg)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    direction = np.cos(angle_rad)[:, None] * north + np.sin(angle_rad)[:, None] * east
    v = np.cos(r)[:, None] * centre + np.sin(r)[:, None] * direction
    return _angles(v)


def csc_name_cells(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, ...]:
    """The name grid cell of each position, by truncation like CSC.

    Returns (ra_cell, dec_cell, negative): ra_cell counts 0.1 s of time, dec_cell whole
    arcseconds of |dec|, negative is the sign of dec.
    """
    ra_cell = np.floor(np.asarray(ra_deg) * (_RA_CELLS / 360.0)).astype(np.int64)
    dec_cell = np.floor(np.abs(np.asarray(dec_deg)) * 3600.0).astype(np.int64)
    return ra_cell, dec_cell, np.asarray(dec_deg) < 0


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative integers, zero padded, as an (n, width) uint8 array."""
    out = np.empty((len(values), width), dtype=np.uint8)
    rest = np.asarray(values, dtype=np.int64)
    for i in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        out[:, i] = digit + 48
    return out


def _fixed_width_strings(columns: list[np.ndarray | bytes], n: int) -> pa.Array:
    """Concatenate byte columns (constant bytes or (n, w) uint8 arrays) into an Arrow string
    array without a Python loop over rows."""
    blocks = []
    for col in columns:
        if isinstance(col, bytes):
            blocks.append(np.broadcast_to(np.frombuffer(col, dtype=np.uint8), (n, len(col))))
        else:
            blocks.append(col)
    mat = np.ascontiguousarray(np.concatenate(blocks, axis=1))
    width = mat.shape[1]
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(mat.reshape(-1))]
    )


def csc_names(ra_cell: np.ndarray, dec_cell: np.ndarray, negative: np.ndarray) -> pa.Array:
    """`2CXO Jhhmmss.s±ddmmss` for name-grid cells (see `csc_name_cells`)."""
    n = len(ra_cell)
    tenths = ra_cell  # 0.1 s units
    hh, mm = tenths // 36_000, (tenths // 600) % 60
    ss, frac = (tenths // 10) % 60, tenths % 10
    dd, dm, ds = dec_cell // 3600, (dec_cell // 60) % 60, dec_cell % 60
    sign = np.where(negative, ord("-"), ord("+")).astype(np.uint8)[:, None]
    return _fixed_width_strings(
        [
            b"2CXO J",
            _digits(hh, 2),
            _digits(mm, 2),
            _digits(ss, 2),
            b".",
            _digits(frac, 1),
            sign,
            _digits(dd, 2),
            _digits(dm, 2),
            _digits(ds, 2),
        ],
        n,
    )


def nudge_to_residue(cell: np.ndarray, residue: int, modulus: int) -> np.ndarray:
    """Largest cell <= `cell` congruent to `residue` mod `modulus` (or the smallest above 0).

    Chunk j only uses name cells in its own residue class, so names never collide across
    chunks; the shift is < modulus cells.
    """
    if modulus <= 1:
        return cell
    out = cell - ((cell - residue) % modulus)
    return np.where(out < 0, out + modulus, out)


def chunk_residues(chunk: int, n_chunks: int) -> tuple[int, int, int, int]:
    """(dec_residue, dec_modulus, ra_residue, ra_modulus) for chunk `chunk`.

    The chunk index is split over Dec arcseconds and RA tenths of a second so both nudges stay
    small (about sqrt(n_chunks) cells each): 100 chunks shift Dec by < 10" and RA by < 1 s.
    """
    if n_chunks <= 1:
        return 0, 1, 0, 1
    dec_mod = math.isqrt(n_chunks - 1) + 1
    ra_mod = -(-n_chunks // dec_mod)
    return chunk // ra_mod, dec_mod, chunk % ra_mod, ra_mod


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


def _cdf(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(np.asarray(p, dtype=float))
    c /= c[-1]
    c[-1] = 1.0
    return c


def _choose(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


# --------------------------------------------------------------------------------------
# The fitted model, as arrays
# --------------------------------------------------------------------------------------


class _Model:
    """The params file turned into the arrays the chunk generator indexes."""

    def __init__(self, params: dict[str, Any], sha256: str) -> None:
        self.params = params
        self.sha256 = sha256
        nc = len(CLASSES)
        if tuple(params["classes"]) != CLASSES or tuple(params["features"]) != FEATURES:
            raise ValueError("params file lists other classes or features than this simulator")
        self.class_cdf = _cdf([params["class_proportions"][c] for c in CLASSES])
        self.bounds = params["bounds"]

        # Gaussian mixtures: group g = 2 * class + (1 if symmetric state); padded to K, 12.
        gmm = params["gmm"]
        k_max = max(len(gmm[c][s]["weights"]) for c in CLASSES for s in ("sym", "nonsym"))
        self.k_max = k_max
        self.comp_cdf = np.ones((2 * nc, k_max))
        self.means = np.zeros((2 * nc, k_max, 12))
        self.chols = np.zeros((2 * nc, k_max, 12, 12))
        self.p_sym = np.array([gmm[c]["p_sym"] for c in CLASSES])
        for ci, c in enumerate(CLASSES):
            for si, state in enumerate(("nonsym", "sym")):
                g, d = gmm[c][state], (12 if state == "nonsym" else 11)
                w = np.asarray(g["weights"], dtype=float)
                self.comp_cdf[2 * ci + si, : len(w)] = _cdf(w)
                tril = np.tril_indices(d)
                for k in range(len(w)):
                    self.means[2 * ci + si, k, :d] = g["means"][k]
                    chol = np.zeros((d, d))
                    chol[tril] = g["chol"][k]
                    self.chols[2 * ci + si, k, :d, :d] = chol
        self.chols_t = np.ascontiguousarray(np.swapaxes(self.chols, -1, -2))
        self.map_start, self.map_step, self.map_vals = _marginal_maps(
            self.means, self.chols, self.comp_cdf, self.p_sym, params["latent_quantiles"]
        )
        self.zero_ratio = np.array([params["zero_ratio_fraction"][b] for b in ("b", "h", "s")])

        ws = params["within_source"]
        wchol = np.zeros((12, 12))
        wchol[np.tril_indices(12)] = ws["chol"]
        self.state_redraw = float(ws["state_redraw_probability"])
        self.faint_scale = float(ws["faint_noise_scale"])
        # keep[g, k, i] = sqrt(1 - within variance / component variance), floored at 0
        comp_var = np.einsum("gkij,gkij->gki", self.chols, self.chols)
        within_var = np.diag(wchol @ wchol.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(comp_var > 0, within_var / comp_var, 1.0)
        self.keep = np.sqrt(np.clip(1.0 - ratio, 0.0, 1.0))

        self.det_cdf = _cdf(detections_per_source_pmf(params["detections_per_source"]))
        self.det_mean = float(
            np.sum(np.arange(1, len(self.det_cdf) + 1) * np.diff(self.det_cdf, prepend=0.0))
        )
        br = params["brightness"]
        self.rho = float(br["rho"])
        self.tail_shift = float(br["tail_shift"])
        self.threshold = float(br["threshold"])
        sig = params["significance"]
        self.sel_q_p = np.asarray(sig["selected_probs"], dtype=float)
        self.sel_q_log = np.asarray(sig["selected_log_quantiles"], dtype=float)
        self.faint_log_median = math.log(float(sig["faint_median"]))
        self.faint_log_sd = float(sig["faint_sigma_ln"])

        rates = params["rates"]
        self.rate_mean = np.asarray(rates["log_sig_log_mean_b"]["mean"], dtype=float)
        self.rate_cov = np.asarray(rates["log_sig_log_mean_b"]["cov"], dtype=float)
        split = rates["band_split"]
        self.split_coef = np.asarray(split["coef"], dtype=float)  # (2, 3)
        self.split_chol = np.linalg.cholesky(np.asarray(split["resid_cov"], dtype=float))
        self.sum_sd = float(rates["broad_vs_sum_sigma_ln"])
        bm = params["band_m"]
        self.m_prob = np.asarray(bm["logit_prob"]["coef"], dtype=float)
        self.m_prob_sd = float(bm["logit_prob"]["resid_sd"])
        self.m_ratio = np.asarray(bm["log_ratio"]["coef"], dtype=float)
        self.m_ratio_sd = float(bm["log_ratio"]["resid_sd"])
        mm = params["min_max"]
        self.mm_probs = np.asarray(mm["f_probs"], dtype=float)
        self.mm = {
            b: (
                float(mm["bands"][b]["p_sym"]),
                float(mm["bands"][b]["log_newq_mean"]),
                float(mm["bands"][b]["log_newq_sd"]),
                expit(np.asarray(mm["bands"][b]["logit_f_quantiles"], dtype=float)),
            )
            for b in BANDS
        }
        self.nulls = params["nulls"]
        self.sky = params["sky"]
        self.sim = params["simbad"]


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
            cdf = (w * ndtr((x[:, None] - mu) / s)).sum(axis=1)
            start[ci, i], step[ci, i] = x[0], x[1] - x[0]
            vals[ci, i] = np.interp(cdf, probs, q[i])
    return start, step, vals


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


def _load_model(path: Path | None) -> _Model:
    path = default_params_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"simulator params not found at {path}; run scripts/calibrate_simulator.py"
        )
    raw = path.read_bytes()
    return _Model(json.loads(raw), hashlib.sha256(raw).hexdigest())


# --------------------------------------------------------------------------------------
# Chunk generation
# --------------------------------------------------------------------------------------


def _source_counts(rng: np.random.Generator, model: _Model, n_det: int) -> np.ndarray:
    """Detections per source summing to exactly n_det (the last source is truncated)."""
    counts: list[np.ndarray] = []
    total = 0
    while total < n_det:
        batch = int((n_det - total) / model.det_mean * 1.05) + 16
        draw = _choose(rng, model.det_cdf, batch) + 1
        counts.append(draw)
        total += int(draw.sum())
    out = np.concatenate(counts)
    csum = np.cumsum(out)
    last = int(np.searchsorted(csum, n_det))
    out = out[: last + 1]
    out[last] -= int(csum[last]) - n_det
    return out


def _gmm_components(rng: np.random.Generator, model: _Model, group: np.ndarray) -> np.ndarray:
    """Mixture component of each row of the given class × state groups."""
    comp = (rng.random(len(group))[:, None] > model.comp_cdf[group]).sum(axis=1)
    return np.minimum(comp, model.k_max - 1)


def _blocks(key: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by key, and the start of each key's block in that order."""
    if n_keys <= 2**16:
        # a stable sort of 8/16-bit keys is a radix sort in numpy: O(n)
        key = key.astype(np.uint8 if n_keys <= 2**8 else np.uint16)
    order = np.argsort(key, kind="stable")
    return order, np.searchsorted(key[order], np.arange(n_keys + 1))


def _gmm_draw(
    rng: np.random.Generator, model: _Model, group: np.ndarray, comp: np.ndarray
) -> np.ndarray:
    """One latent vector per row from its (group, component) Gaussian (no marginal map)."""
    order, bounds = _blocks(group * model.k_max + comp, len(model.means) * model.k_max)
    eps = rng.standard_normal((len(group), 12))  # consumed in sorted order
    z = np.empty((len(group), 12))
    for kk in np.flatnonzero(np.diff(bounds)):
        g, k = divmod(int(kk), model.k_max)
        lo, hi = bounds[kk], bounds[kk + 1]
        z[order[lo:hi]] = model.means[g, k] + np.dot(eps[lo:hi], model.chols_t[g, k])
    return z


def blend_latents(
    z_src: np.ndarray, dev: np.ndarray, mean: np.ndarray, keep: np.ndarray, scale: np.ndarray
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


def _detection_latents(
    rng: np.random.Generator,
    model: _Model,
    z_src: np.ndarray,
    sym_src: np.ndarray,
    comp_src: np.ndarray,
    src: np.ndarray,
    k: np.ndarray,
    c_det: np.ndarray,
    selected: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Latent feature vectors of all detections, marginal maps applied; and their state.

    A selected first detection is its source's draw (copy). Other detections redraw the
    min/max state with state_redraw probability; keeping the state they blend the source
    vector with a fresh draw of the same component, otherwise they are a fresh draw of the
    other state's mixture. Rows are processed in blocks sharing (class, state, component,
    mode, selected), so every coefficient is a constant vector within a block.
    """
    n = len(src)
    redraw = (k > 0) & (rng.random(n) < model.state_redraw)
    sym = np.where(redraw, rng.random(n) < model.p_sym[c_det], sym_src[src])
    same = sym == sym_src[src]
    group = 2 * c_det + sym
    comp = np.where(same, comp_src[src], _gmm_components(rng, model, group))
    mode = np.where((k == 0) & selected, 2, same.astype(np.int64))  # 0 fresh, 1 blend, 2 copy
    key = ((group * model.k_max + comp) * 3 + mode) * 2 + selected
    order, bounds = _blocks(key, len(model.means) * model.k_max * 6)
    eps = rng.standard_normal((n, 12))  # consumed in sorted order
    z_sorted = np.empty((n, 12))
    for kk in np.flatnonzero(np.diff(bounds)):
        gk, rest = divmod(int(kk), 6)
        g, kc = divmod(gk, model.k_max)
        mode_k, bright = divmod(rest, 2)
        lo, hi = bounds[kk], bounds[kk + 1]
        out = z_sorted[lo:hi]
        zs = z_src[src[order[lo:hi]]]
        if mode_k == 2:
            out[:] = zs
        else:
            mean = model.means[g, kc]
            keep = model.keep[g, kc] if mode_k == 1 else np.zeros(12)
            scale = 1.0 if bright else model.faint_scale
            dev = np.dot(eps[lo:hi], model.chols_t[g, kc])
            out[:] = blend_latents(zs if mode_k == 1 else mean, dev, mean, keep, scale)
        c = g // 2
        d = 11 if g % 2 else 12  # the symmetric state has no newq dimension
        out[:, :d] = apply_uniform_maps(
            out[:, :d], model.map_start[c, :d], model.map_step[c, :d], model.map_vals[c, :d]
        )
        if d == 11:
            out[:, 11] = np.nan
    z = np.empty_like(z_sorted)
    z[order] = z_sorted
    return z, sym


def _sample_sky(
    rng: np.random.Generator, sky: Mapping[str, Any], cls: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) per item: a thin-disc component, a low-latitude 'zone' component and an
    isotropic component avoiding |b| < b_avoid, mixed per class."""
    n = len(cls)
    per = sky["classes"]
    plane = np.array([per[c]["plane_fraction"] for c in CLASSES])[cls]
    zone = np.array([per[c]["zone_fraction"] for c in CLASSES])[cls]
    scale = np.array([per[c]["plane_b_scale_deg"] for c in CLASSES])[cls]
    l_sigma = np.array([per[c]["plane_l_sigma_deg"] for c in CLASSES])[cls]
    sin_avoid = math.sin(math.radians(float(sky["b_avoid_deg"])))
    u = rng.random(n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    l_uniform = rng.random(n) * 360.0
    l_plane = (rng.standard_normal(n) * l_sigma) % 360.0
    b_plane = np.minimum(rng.exponential(1.0, n) * scale, 89.0)
    b_zone = np.degrees(np.arcsin(sin_avoid * (2.0 * rng.random(n) - 1.0)))
    b_off = np.degrees(np.arcsin(sin_avoid + (1.0 - sin_avoid) * rng.random(n)))
    in_plane, in_zone = u < plane, (u >= plane) & (u < plane + zone)
    b = np.where(in_plane, b_plane, np.where(in_zone, b_zone, b_off)) * np.where(in_zone, 1, sign)
    lon = np.where(in_plane, l_plane, l_uniform)
    return lon, b


def _place_sources(
    rng: np.random.Generator, model: _Model, cls: np.ndarray, chunk: int, n_chunks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Sky positions clumped in fields (Chandra pointings), nudged so the CSC name is unique
    in this chunk and in no other chunk. Returns ra, dec, field index, name cells."""
    sky = model.sky
    n = len(cls)
    n_cls = np.bincount(cls, minlength=len(CLASSES))
    per_field = np.array([sky["classes"][c]["sources_per_field"] for c in CLASSES])
    n_fields = np.where(n_cls > 0, np.maximum(1, np.ceil(n_cls / per_field)), 0).astype(np.int64)
    field_base = np.cumsum(n_fields) - n_fields
    field = field_base[cls] + (rng.random(n) * n_fields[cls]).astype(np.int64)
    field_cls = np.repeat(np.arange(len(CLASSES)), n_fields)
    fl, fb = _sample_sky(rng, sky, field_cls)
    f_ra, f_dec = galactic_to_icrs(fl, fb)
    radius_arcmin = np.array([sky["classes"][c]["field_radius_arcmin"] for c in CLASSES])[cls]
    r = radius_arcmin / 60.0 * np.sqrt(rng.random(n))
    ra, dec = offset_positions(f_ra[field], f_dec[field], r, rng.random(n) * 2 * np.pi)

    dec_res, dec_mod, ra_res, ra_mod = chunk_residues(chunk, n_chunks)
    todo = np.arange(n)
    ra_cell = np.empty(n, dtype=np.int64)
    dec_cell = np.empty(n, dtype=np.int64)
    neg = np.empty(n, dtype=bool)
    for _ in range(200):
        rc, dc, ng = csc_name_cells(ra[todo], dec[todo])
        rc = nudge_to_residue(rc, ra_res, ra_mod)
        dc = nudge_to_residue(np.minimum(dc, _DEC_CELLS - 1), dec_res, dec_mod)
        # Keep the sub-cell fraction but away from cell edges, so any truncation agrees.
        fr = np.clip(
            ra[todo] * (_RA_CELLS / 360.0) - np.floor(ra[todo] * (_RA_CELLS / 360.0)),
            1e-6,
            1 - 1e-6,
        )
        fd = np.clip(
            np.abs(dec[todo]) * 3600.0 - np.floor(np.abs(dec[todo]) * 3600.0), 1e-6, 1 - 1e-6
        )
        ra[todo] = (rc + fr) * (360.0 / _RA_CELLS)
        dec[todo] = np.where(ng, -1.0, 1.0) * (dc + fd) / 3600.0
        ra_cell[todo], dec_cell[todo], neg[todo] = rc, dc, ng
        key = (dec_cell * 2 + neg) * _RA_CELLS + ra_cell
        _, first = np.unique(key, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        todo = np.flatnonzero(dup)
        if todo.size == 0:
            break
        # Move a duplicate a few arcsec (a neighbouring source in the same field).
        ra[todo], dec[todo] = offset_positions(
            ra[todo],
            dec[todo],
            (2.0 + 8.0 * rng.random(todo.size)) * _ARCSEC,
            rng.random(todo.size) * 2 * np.pi,
        )
    else:  # pragma: no cover - needs ~10^5 sources per square arcminute
        raise RuntimeError("could not make source names unique within a chunk")
    return ra, dec, field, (ra_cell, dec_cell, neg)


def _assign_obsids(
    rng: np.random.Generator,
    field: np.ndarray,
    counts: np.ndarray,
    src: np.ndarray,
    k: np.ndarray,
    obsid_base: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """obsid, obi, region_id per detection: each field is a set of pointings, a source's
    detections fall in distinct pointings of its field, region_id counts within an obsid."""
    n_fields = int(field.max()) + 1
    depth = np.zeros(n_fields, dtype=np.int64)
    np.maximum.at(depth, field, counts)
    base = np.cumsum(depth) - depth
    offset = (rng.random(len(counts)) * depth[field]).astype(np.int64)
    f = field[src]
    pointing = base[f] + (offset[src] + k) % depth[f]
    used = np.bincount(pointing, minlength=int(depth.sum())) > 0
    local = (np.cumsum(used) - 1)[pointing]  # compact ids of the pointings in use
    n_used = int(used.sum())
    obsid = (obsid_base + local).astype(np.int32)
    obi_per = np.where(rng.random(n_used) < 0.03, 1, 0).astype(np.int16)
    order = np.argsort(local, kind="stable")
    starts = np.searchsorted(local[order], np.arange(n_used))
    rank = np.empty(len(local), dtype=np.int64)
    rank[order] = np.arange(len(local)) - starts[local[order]]
    return obsid, obi_per[local], (rank + 1).astype(np.int32)


def _significance(model: _Model, u_det: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """flux_significance_b from the brightness latent: the selected tail follows the real
    significance quantiles above 5, the rest a faint log-normal; both monotone in u."""
    t = model.threshold
    sig = np.empty(len(u_det))
    tail = ndtr(-t)
    v_sel = 1.0 - ndtr(-u_det[selected]) / tail
    sig[selected] = np.exp(np.interp(v_sel, model.sel_q_p, model.sel_q_log))
    v_faint = np.clip(ndtr(u_det[~selected]) / ndtr(t), 1e-12, 1 - 1e-12)
    sig[~selected] = np.exp(model.faint_log_median + model.faint_log_sd * ndtri(v_faint))
    return np.maximum(sig, 1e-3)


def _min_max(
    rng: np.random.Generator,
    mm: tuple[float, float, float, np.ndarray],
    probs: np.ndarray,
    mean: np.ndarray,
    sigma: np.ndarray,
    sym: np.ndarray | None,
    newq: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """var_min/var_max: symmetric blocks give mean ∓ sigma (newq = 1 exactly, as in CSC);
    otherwise (max + min)/2 = newq × mean with half-width f × that, so min >= 0 <= max."""
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


def _generate_chunk(
    model: _Model, cfg: SimulationConfig, chunk: int, n_chunks: int, n_det: int
) -> tuple[pa.Table, pa.Table, pa.Table, dict[str, Any]]:
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(chunk,)))
    nulls = model.nulls

    # --- sources and their detections -------------------------------------------------
    counts = _source_counts(rng, model, n_det)
    n_src = len(counts)
    cls = _choose(rng, model.class_cdf, n_src)
    starts = np.cumsum(counts) - counts
    src = np.repeat(np.arange(n_src), counts)
    k = np.arange(n_det) - starts[src]

    # --- brightness, significance and spectral fits ------------------------------------
    u_src = rng.standard_normal(n_src) + np.where(counts > 10, model.tail_shift, 0.0)
    u_det = model.rho * u_src[src] + math.sqrt(1 - model.rho**2) * rng.standard_normal(n_det)
    selected = u_det > model.threshold
    sig = _significance(model, u_det, selected)
    fit_n = nulls["faint_fits"]
    u_fit = rng.random(n_det)
    hi_sig = sig > 5.0
    # Faint rows: > 5 sigma but no spectral fit (or only one of the two), or <= 5 sigma and
    # occasionally fitted; selected rows always have both fits.
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

    # --- per-source feature vectors, per-detection variation ---------------------------
    sym_src = rng.random(n_src) < model.p_sym[cls]
    group_src = 2 * cls + sym_src
    comp_src = _gmm_components(rng, model, group_src)
    z_src = _gmm_draw(rng, model, group_src, comp_src)
    c_det = cls[src]
    z, sym = _detection_latents(rng, model, z_src, sym_src, comp_src, src, k, c_det, selected)
    del z_src
    x = latent_to_features(z, model.bounds)
    del z
    for j, col in enumerate((6, 8, 10)):
        x[rng.random(n_det) < model.zero_ratio[j], col] = 0.0
    x[sym, 6] = np.minimum(x[sym, 6], 0.999)  # mean - sigma >= 0 in the symmetric state

    # --- count rates: broad band from significance, split by hardness -------------------
    log_sig = np.log(sig)
    m_sig, m_rate = model.rate_mean
    c = model.rate_cov
    cond_mu = m_rate + c[0, 1] / c[0, 0] * (log_sig - m_sig)
    cond_sd = math.sqrt(max(c[1, 1] - c[0, 1] ** 2 / c[0, 0], 1e-12))
    log_rate_b = cond_mu + cond_sd * rng.standard_normal(n_det)
    at_hm = np.arctanh(np.clip(x[:, 0], -HARD_CLIP, HARD_CLIP))
    at_ms = np.arctanh(np.clip(x[:, 2], -HARD_CLIP, HARD_CLIP))
    design = np.stack([np.ones(n_det), at_hm, at_ms], axis=1)
    y = design @ model.split_coef.T + rng.standard_normal((n_det, 2)) @ model.split_chol.T
    w_h, w_s = np.exp(y[:, 0]), np.exp(-y[:, 1])  # h/m and s/m
    rate_m = np.exp(log_rate_b) / (1.0 + w_h + w_s)
    mean = {"h": rate_m * w_h, "m": rate_m, "s": rate_m * w_s}

    # --- which values are null or zero --------------------------------------------------
    drop = selected & (rng.random(n_det) < nulls["selected_drop_fraction"])
    mech = _choose(rng, _cdf(list(nulls["drop_mechanisms"].values())), n_det)
    mech_names = list(nulls["drop_mechanisms"])
    drop_band = np.array(["b", "h", "s"])[_choose(rng, _cdf(nulls["drop_band_weights"]), n_det)]
    faint = ~selected
    band_null = {}
    mean_zero = {}
    prob_null = {}
    fb = nulls["faint"]
    for b in BANDS:
        band_null[b] = faint & (rng.random(n_det) < fb["band_null"][b])
        mean_zero[b] = faint & ~band_null[b] & (rng.random(n_det) < fb["mean_zero"][b])
        prob_null[b] = faint & ~band_null[b] & (rng.random(n_det) < fb["prob_null"][b])
        if b != "m":
            is_b = drop & (drop_band == b)
            band_null[b] |= is_b & (mech == mech_names.index("var_band_null"))
            mean_zero[b] |= is_b & (mech == mech_names.index("var_mean_zero"))
            prob_null[b] |= is_b & (mech == mech_names.index("var_prob_null"))
    band_null["m"] |= selected & (rng.random(n_det) < nulls["selected_band_m_null"])
    hard_all = faint & (rng.random(n_det) < fb["hardness_all_null"])
    hard_one = faint & ~hard_all & (rng.random(n_det) < fb["hardness_one_null"])
    hard_drop = drop & (mech == mech_names.index("hardness_null"))
    hard_all |= hard_drop & (rng.random(n_det) < 0.6)
    hard_one |= hard_drop & ~hard_all
    which_hard = (rng.random(n_det) * 3).astype(np.int64)

    for b in ("h", "m", "s"):
        mean[b] = np.where(mean_zero[b] | mean_zero["b"], 0.0, mean[b])
    rate_sum = mean["h"] + mean["m"] + mean["s"]
    mean["b"] = np.where(
        mean_zero["b"], 0.0, rate_sum * np.exp(model.sum_sd * rng.standard_normal(n_det))
    )

    # --- raw variability columns ----------------------------------------------------------
    cols: dict[str, np.ndarray] = {}
    ratio = {"b": x[:, 6], "h": x[:, 8], "s": x[:, 10]}
    prob = {"b": x[:, 5], "h": x[:, 7], "s": x[:, 9]}
    lp_h = logit(np.clip(prob["h"], PROB_FLOOR, 1 - PROB_EPS))
    lp_s = logit(np.clip(prob["s"], PROB_FLOOR, 1 - PROB_EPS))
    prob["m"] = expit(
        model.m_prob[0]
        + model.m_prob[1] * lp_h
        + model.m_prob[2] * lp_s
        + model.m_prob_sd * rng.standard_normal(n_det)
    )
    prob["m"][prob["m"] >= 1 - PROB_EPS] = 1.0
    lr_h, lr_s = np.log(np.maximum(ratio["h"], 1e-9)), np.log(np.maximum(ratio["s"], 1e-9))
    ratio["m"] = np.exp(
        np.minimum(
            model.m_ratio[0]
            + model.m_ratio[1] * lr_h
            + model.m_ratio[2] * lr_s
            + model.m_ratio_sd * rng.standard_normal(n_det),
            math.log(model.bounds["var_ratio_max"]),
        )
    )
    for b in BANDS:
        sigma = ratio[b] * mean[b]
        if b == "b":
            lo, hi = _min_max(rng, model.mm[b], model.mm_probs, mean[b], sigma, sym, x[:, 11])
        else:
            lo, hi = _min_max(rng, model.mm[b], model.mm_probs, mean[b], sigma, None, None)
        vals = {"prob": prob[b].copy(), "sigma": sigma, "mean": mean[b], "min": lo, "max": hi}
        vals["prob"][prob_null[b]] = np.nan
        for stat in _VAR_STATS:
            v = vals[stat]
            v[band_null[b]] = np.nan
            cols[f"var_{stat}_{b}"] = v

    cols["flux_significance_b"] = sig
    for j, feat in enumerate(("hard_hm", "hard_hs", "hard_ms")):
        v = x[:, j].copy()
        v[hard_all | (hard_one & (which_hard == j))] = np.nan
        cols[feat] = v
    cols["powlaw_gamma"] = np.where(gamma_ok, x[:, 3], np.nan)
    cols["bb_kt"] = np.where(bb_ok, x[:, 4], np.nan)
    del x

    # --- sky, names, obsids -------------------------------------------------------------
    ra_src, dec_src, field, cells = _place_sources(rng, model, cls, chunk, n_chunks)
    names_src = csc_names(*cells)
    obsid_base = 1 + chunk * cfg.chunk_size
    obsid, obi, region_id = _assign_obsids(rng, field, counts, src, k, obsid_base)

    # --- SIMBAD and truth ----------------------------------------------------------------
    simbad, truth_ids, truth_otypes, n_cp, n_field = _simbad_chunk(
        rng, model, cfg, chunk, cls, ra_src, dec_src
    )
    outliers = None
    if cfg.outlier_fraction > 0:  # its own stream: the rest of the catalogue is unchanged
        unmatched = ~truth_ids.is_valid().to_numpy(zero_copy_only=False)[src]
        orng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(chunk, 1)))
        rows, kinds = inject_outliers(orng, cols, selected & unmatched, cfg.outlier_fraction)
        outliers = pa.table({
            "name": pc.take(names_src, pa.array(src[rows])),
            "obsid": pa.array(obsid[rows], type=pa.int32()),
            "obi": pa.array(obi[rows], type=pa.int16()),
            "region_id": pa.array(region_id[rows], type=pa.int32()),
            "kind": pa.array(np.array(OUTLIER_KINDS)[kinds].tolist(), type=pa.string()),
        })

    # --- tables and counts ---------------------------------------------------------------
    arrays: list[pa.Array] = [
        pc.take(names_src, pa.array(src)),
        pa.array(obsid, type=pa.int32()),
        pa.array(obi, type=pa.int16()),
        pa.array(region_id, type=pa.int32()),
        pa.array(ra_src[src]),
        pa.array(dec_src[src]),
    ]
    for col in DETECTION_SCHEMA.names[6:]:
        v = cols[col]
        if not np.all(np.isfinite(v) | np.isnan(v)):  # pragma: no cover - a bug guard
            raise RuntimeError(f"non-finite values generated in {col}")
        arrays.append(pa.array(v, type=pa.float64(), from_pandas=True))
    detections = pa.Table.from_arrays(arrays, schema=DETECTION_SCHEMA)

    class_names = pa.array(CLASSES, type=pa.string())
    agg_names = pa.array([AGG_CLASS[c] for c in CLASSES], type=pa.string())
    truth = pa.Table.from_arrays(
        [
            names_src,
            pc.take(class_names, pa.array(cls)),
            pc.take(agg_names, pa.array(cls)),
            truth_ids,
            truth_otypes,
        ],
        schema=TRUTH_SCHEMA,
    )

    sel_idx = np.flatnonzero(selected)
    feats = derive_features({name: v[sel_idx] for name, v in cols.items()})
    complete = np.zeros(n_det, dtype=bool)
    complete[sel_idx] = np.all(np.isfinite(feats), axis=1)
    sel_check = paper_selection(cols)
    if not np.array_equal(sel_check, selected):  # pragma: no cover - a bug guard
        raise RuntimeError("selection bookkeeping disagrees with the generated columns")
    nc = len(CLASSES)
    stats = {
        "n_detections": n_det,
        "n_sources": n_src,
        "n_counterparts": n_cp,
        "n_field_objects": n_field,
        "n_selected": int(selected.sum()),
        "n_selected_complete": int(complete.sum()),
        "sources": np.bincount(cls, minlength=nc),
        "detections": np.bincount(c_det, minlength=nc),
        "selected": np.bincount(c_det[selected], minlength=nc),
        "selected_complete": np.bincount(c_det[complete], minlength=nc),
        "with_counterpart": np.bincount(
            cls[truth_ids.is_valid().to_numpy(zero_copy_only=False)], minlength=nc
        ),
    }
    if outliers is not None:
        stats["n_outliers"] = outliers.num_rows
        stats["outliers"] = outliers
    return detections, simbad, truth, stats


def _simbad_chunk(
    rng: np.random.Generator,
    model: _Model,
    cfg: SimulationConfig,
    chunk: int,
    cls: np.ndarray,
    ra_src: np.ndarray,
    dec_src: np.ndarray,
) -> tuple[pa.Table, pa.Array, pa.Array, int, int]:
    """Counterparts (with otype noise and positional scatter) plus unrelated field objects."""
    sp = model.sim
    n_src = len(cls)
    codes: list[str] = list(sp["otype_codes"])
    code_idx = {c: i for i, c in enumerate(codes)}
    has_cp = rng.random(n_src) < cfg.match_fraction
    cp_src = np.flatnonzero(has_cp)
    n_cp = cp_src.size
    cp_cls = cls[cp_src]

    # otype of each counterpart
    otype = np.empty(n_cp, dtype=np.int64)
    wrong = rng.random(n_cp) < cfg.wrong_type_fraction
    u_cat = rng.random(n_cp)
    u_code = rng.random(n_cp)
    u_wrong_group = rng.random(n_cp)
    u_wrong_pick = rng.random(n_cp)
    for ci, c in enumerate(CLASSES):
        sel = cp_cls == ci
        if not sel.any():
            continue
        spec = sp["classes"][c]
        cat_cdf = _cdf([spec["own"], spec["uninformative"], spec["rare"]])
        category = np.searchsorted(cat_cdf, u_cat[sel], side="right")
        out = np.full(sel.sum(), code_idx[OWN_OTYPE[c]], dtype=np.int64)
        for cat_i, key in ((1, "uninformative_codes"), (2, "rare_codes")):
            m = category == cat_i
            names = list(spec[key])
            cdf = _cdf(list(spec[key].values()))
            pick = np.minimum(np.searchsorted(cdf, u_code[sel][m], side="right"), len(cdf) - 1)
            out[m] = np.array([code_idx[x] for x in names])[pick]
        # wrong reference class: mostly a sibling in the same aggregated class
        same = [code_idx[OWN_OTYPE[o]] for o in CLASSES if o != c and AGG_CLASS[o] == AGG_CLASS[c]]
        other = [code_idx[OWN_OTYPE[o]] for o in CLASSES if AGG_CLASS[o] != AGG_CLASS[c]]
        w = wrong[sel]
        in_group = u_wrong_group[sel] < sp["wrong_same_group_fraction"]
        pool_same, pool_other = np.array(same), np.array(other)
        pick_same = pool_same[(u_wrong_pick[sel] * len(same)).astype(np.int64)]
        pick_other = pool_other[(u_wrong_pick[sel] * len(other)).astype(np.int64)]
        out = np.where(w, np.where(in_group, pick_same, pick_other), out)
        otype[sel] = out

    # counterpart positions: tight core plus a tail beyond 1"
    pos = sp["positions"]
    tail = rng.random(n_cp) < pos["tail_fraction"]
    r_core = rng.rayleigh(pos["core_sigma_arcsec"], n_cp)
    r_tail = pos["tail_start_arcsec"] + rng.exponential(pos["tail_scale_arcsec"], n_cp)
    r = np.where(tail, r_tail, r_core) * _ARCSEC
    cp_ra, cp_dec = offset_positions(
        ra_src[cp_src], dec_src[cp_src], r, rng.random(n_cp) * 2 * np.pi
    )

    # unrelated field objects
    fo = sp["field_objects"]
    n_field = round(fo["per_counterpart"] * n_cp) if n_src else 0
    kind = _choose(
        rng,
        _cdf(
            [
                fo["near_fraction"],
                fo["close_fraction"],
                1 - fo["near_fraction"] - fo["close_fraction"],
            ]
        ),
        n_field,
    )
    anchor = rng.integers(0, max(n_src, 1), n_field)
    r_near = fo["near_min_arcsec"] + (fo["near_max_arcsec"] - fo["near_min_arcsec"]) * rng.random(
        n_field
    )
    r_close = rng.rayleigh(fo["close_sigma_arcsec"], n_field)
    rad = np.where(kind == 0, r_near, r_close) * _ARCSEC
    f_ra, f_dec = offset_positions(
        ra_src[anchor] if n_src else np.zeros(n_field),
        dec_src[anchor] if n_src else np.zeros(n_field),
        rad,
        rng.random(n_field) * 2 * np.pi,
    )
    rand = kind == 2
    f_ra[rand] = rng.random(int(rand.sum())) * 360.0
    f_dec[rand] = np.degrees(np.arcsin(2.0 * rng.random(int(rand.sum())) - 1.0))
    f_names = list(fo["otypes"])
    f_otype = np.array([code_idx[x] for x in f_names])[
        _choose(rng, _cdf(list(fo["otypes"].values())), n_field)
    ]

    # shuffle so identifiers reveal nothing, then number them
    all_ra = np.concatenate([cp_ra, f_ra])
    all_dec = np.concatenate([cp_dec, f_dec])
    all_otype = np.concatenate([otype, f_otype])
    n_all = all_ra.size
    perm = rng.permutation(n_all)
    main_id = _fixed_width_strings(
        [
            b"XSIM ",
            _digits(np.full(n_all, chunk, dtype=np.int64), 6),
            b"-",
            _digits(np.arange(n_all, dtype=np.int64), 10),
        ],
        n_all,
    )
    code_arr = pa.array(codes, type=pa.string())
    simbad = pa.Table.from_arrays(
        [
            main_id,
            pc.take(code_arr, pa.array(all_otype[perm])),
            pa.array(all_ra[perm]),
            pa.array(all_dec[perm]),
        ],
        schema=SIMBAD_SCHEMA,
    )
    # position of each counterpart in the shuffled table
    where = np.empty(n_all, dtype=np.int64)
    where[perm] = np.arange(n_all)
    src_row = np.full(n_src, -1, dtype=np.int64)
    src_row[cp_src] = where[:n_cp]
    take_idx = pa.array(np.where(src_row >= 0, src_row, 0), mask=src_row < 0)
    truth_ids = pc.take(main_id, take_idx)
    truth_otypes = pc.take(simbad.column("otype").combine_chunks(), take_idx)
    return simbad, truth_ids, truth_otypes, int(n_cp), int(n_field)


# --------------------------------------------------------------------------------------
# Injected outliers
# --------------------------------------------------------------------------------------

OUTLIER_KINDS: tuple[str, ...] = ("transient", "spectral")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def inject_outliers(
    rng: np.random.Generator, cols: dict[str, np.ndarray], eligible: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Turn about `fraction` of the `eligible` detections into sources that fit no class.

    Why: the anomaly score must be tested against known answers. Every feature starts as the
    value of a random complete detection, drawn column by column; then a "transient" becomes a
    strong flare (variable in every band, variability ratios 15-34, var_newq_b 30-600) and a
    "spectral" outlier an extreme, inconsistent spectrum (hard_hm 0.85-0.99 with hard_ms -0.99
    to -0.85, powlaw_gamma 7-9.8, bb_kt 20-120 keV). Values stay inside the ranges the simulator
    otherwise produces: only their combination fits no class. The raw columns (`cols`, modified
    in place) are rewritten so the derived features are exactly these. Returns the rows and
    their kind codes (indices into OUTLIER_KINDS).
    """
    complete = np.flatnonzero(eligible)
    donors = derive_features({k: v[complete] for k, v in cols.items()})
    donors = donors[np.all(np.isfinite(donors), axis=1)]
    rows = np.flatnonzero(eligible & (rng.random(len(eligible)) < fraction))
    if len(rows) == 0 or len(donors) == 0:
        return rows[:0], rows[:0]
    n = len(rows)
    f = donors[rng.integers(0, len(donors), (n, len(FEATURES))), np.arange(len(FEATURES))]
    kinds = rng.integers(0, len(OUTLIER_KINDS), n)
    flare, spectral = kinds == 0, kinds == 1
    idx = {name: i for i, name in enumerate(FEATURES)}
    for band in "bhs":
        f[flare, idx[f"var_prob_{band}"]] = 1.0
        f[flare, idx[f"var_ratio_{band}"]] = _log_uniform(rng, 15.0, 34.0, int(flare.sum()))
    f[flare, idx["var_newq_b"]] = _log_uniform(rng, 30.0, 600.0, int(flare.sum()))
    m = int(spectral.sum())
    f[spectral, idx["hard_hm"]] = rng.uniform(0.85, 0.99, m)
    f[spectral, idx["hard_ms"]] = rng.uniform(-0.99, -0.85, m)
    f[spectral, idx["hard_hs"]] = rng.uniform(-0.2, 0.2, m)
    f[spectral, idx["powlaw_gamma"]] = rng.uniform(7.0, 9.8, m)
    f[spectral, idx["bb_kt"]] = _log_uniform(rng, 20.0, 120.0, m)
    for name in ("hard_hm", "hard_hs", "hard_ms", "powlaw_gamma", "bb_kt", "var_prob_b",
                 "var_prob_h", "var_prob_s"):
        cols[name][rows] = f[:, idx[name]]
    for band in "bhs":
        mean = cols[f"var_mean_{band}"][rows]
        mean = np.where(np.isfinite(mean) & (mean > 0), mean, 1e-3)
        cols[f"var_mean_{band}"][rows] = mean
        cols[f"var_sigma_{band}"][rows] = f[:, idx[f"var_ratio_{band}"]] * mean
    centre = f[:, idx["var_newq_b"]] * cols["var_mean_b"][rows]
    half = rng.uniform(0.1, 0.9, n) * centre
    cols["var_min_b"][rows] = centre - half
    cols["var_max_b"][rows] = centre + half
    return rows, kinds


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def _write(table: pa.Table, path: Path, dictionary: list[str]) -> None:
    pq.write_table(
        table, path, compression="snappy", use_dictionary=dictionary, write_statistics=True
    )


def simulate_catalogue(
    config: SimulationConfig, out_dir: Path, progress: Callable[[int], None] | None = None
) -> dict:
    """Write a simulated catalogue under `out_dir` and return its summary.

    Layout: detections/part-NNNNN.parquet (one per chunk, DETECTION_SCHEMA),
    simbad/part-NNNNN.parquet, truth/part-NNNNN.parquet and manifest.json (config, params
    sha256, summary). `progress(n)` is called with the detections written after each chunk.
    Refuses to write into a folder that already holds a simulated catalogue, so stale parts
    from an earlier, larger run can never mix in.
    """
    if not isinstance(config, SimulationConfig):
        raise ValueError(f"config must be a SimulationConfig, got {type(config).__name__}")
    model = _load_model(config.params_path)
    out_dir = Path(out_dir)
    parts = {name: out_dir / name for name in ("detections", "simbad", "truth")}
    if config.outlier_fraction > 0:
        parts["outliers"] = out_dir / "outliers"
    existing = [p for p in [*parts.values(), out_dir / "manifest.json"] if p.exists()]
    if existing:
        raise FileExistsError(
            f"{out_dir} already holds simulator output ({existing[0].name}); use an empty folder"
        )
    for p in parts.values():
        p.mkdir(parents=True, exist_ok=True)

    nc = len(CLASSES)
    totals: dict[str, Any] = {
        key: 0
        for key in (
            "n_detections",
            "n_sources",
            "n_counterparts",
            "n_field_objects",
            "n_selected",
            "n_selected_complete",
        )
    }
    per_class = {
        key: np.zeros(nc, dtype=np.int64)
        for key in ("sources", "detections", "selected", "selected_complete", "with_counterpart")
    }
    if "outliers" in parts:
        totals["n_outliers"] = 0
    files: dict[str, list[str]] = {name: [] for name in parts}
    n_chunks, size = config.n_chunks, config.chunk_size
    for j in range(n_chunks):
        n_det = min(size, config.n_detections - j * size)
        det, sim, truth, stats = _generate_chunk(model, config, j, n_chunks, n_det)
        fname = f"part-{j:05d}.parquet"
        _write(det, parts["detections"] / fname, ["name"])
        _write(sim, parts["simbad"] / fname, ["otype"])
        _write(truth, parts["truth"] / fname, ["true_class", "agg_class", "simbad_otype"])
        if "outliers" in parts:
            _write(stats["outliers"], parts["outliers"] / fname, ["kind"])
        for name in parts:
            files[name].append(f"{name}/{fname}")
        for key in totals:
            totals[key] += int(stats[key])
        for key in per_class:
            per_class[key] += stats[key]
        del det, sim, truth, stats
        if progress is not None:
            progress(n_det)

    summary: dict[str, Any] = {
        **totals,
        "n_simbad_rows": totals["n_counterparts"] + totals["n_field_objects"],
        "n_chunks": n_chunks,
        "per_class": {
            c: {key: int(per_class[key][i]) for key in per_class} for i, c in enumerate(CLASSES)
        },
    }
    manifest = {
        "generator": "xpipe.simulate",
        "config": config.to_json(),
        "params_file": str(
            default_params_path() if config.params_path is None else Path(config.params_path)
        ),
        "params_sha256": model.sha256,
        "summary": summary,
        "files": files,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary
