"""The 12 features of every detection: a source draws a latent vector from its class mixture,
its detections copy, blend with or redraw it (METHOD §2 features, before nulls)."""

from __future__ import annotations

import numpy as np

from xpipe.simulation.calibration import Calibration, Mixtures
from xpipe.simulation.draws import blocks
from xpipe.simulation.latent import apply_uniform_maps, blend_latents, latent_to_features
from xpipe.simulation.sources import Sources

_RATIO_COLUMNS = (6, 8, 10)  # var_ratio_b, _h, _s in FEATURES order
_MODES = 6  # 3 modes (0 fresh, 1 blend, 2 copy) × selected or not


def draw_features(
    rng: np.random.Generator, calibration: Calibration, sources: Sources, selected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(n_det, 12) raw features in FEATURES order and the symmetric min/max state per row."""
    mix = calibration.mix
    sym_src = rng.random(len(sources.counts)) < mix.p_sym[sources.cls]
    group_src = 2 * sources.cls + sym_src
    comp_src = gmm_components(rng, mix, group_src)
    z_src = gmm_draw(rng, mix, group_src, comp_src)
    z, sym = detection_latents(
        rng, mix, z_src, sym_src, comp_src, sources=sources, selected=selected
    )
    del z_src
    x = latent_to_features(z, calibration.bounds)
    del z
    n_det = len(sources.src)
    for j, col in enumerate(_RATIO_COLUMNS):
        x[rng.random(n_det) < calibration.zero_ratio[j], col] = 0.0
    x[sym, 6] = np.minimum(x[sym, 6], 0.999)  # mean - sigma >= 0 in the symmetric state
    return x, sym


def gmm_components(rng: np.random.Generator, mix: Mixtures, group: np.ndarray) -> np.ndarray:
    """Mixture component of each row of the given class × state groups."""
    comp = (rng.random(len(group))[:, None] > mix.comp_cdf[group]).sum(axis=1)
    return np.minimum(comp, mix.k_max - 1)


def gmm_draw(
    rng: np.random.Generator, mix: Mixtures, group: np.ndarray, comp: np.ndarray
) -> np.ndarray:
    """One latent vector per row from its (group, component) Gaussian (no marginal map)."""
    order, bounds = blocks(group * mix.k_max + comp, len(mix.means) * mix.k_max)
    eps = rng.standard_normal((len(group), 12))  # consumed in sorted order
    z = np.empty((len(group), 12))
    for kk in np.flatnonzero(np.diff(bounds)):
        g, k = divmod(int(kk), mix.k_max)
        lo, hi = bounds[kk], bounds[kk + 1]
        z[order[lo:hi]] = mix.means[g, k] + np.dot(eps[lo:hi], mix.chols_t[g, k])
    return z


def detection_latents(
    rng: np.random.Generator,
    mix: Mixtures,
    z_src: np.ndarray,
    sym_src: np.ndarray,
    comp_src: np.ndarray,
    *,
    sources: Sources,
    selected: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Latent feature vectors of all detections, marginal maps applied; and their state.

    A selected first detection is its source's draw (copy). Other detections redraw the
    min/max state with state_redraw probability; keeping the state they blend the source
    vector with a fresh draw of the same component, otherwise they are a fresh draw of the
    other state's mixture. Rows are processed in blocks sharing (class, state, component,
    mode, selected), so every coefficient is a constant vector within a block.
    """
    src, k, c_det = sources.src, sources.k, sources.c_det
    n = len(src)
    redraw = (k > 0) & (rng.random(n) < mix.state_redraw)
    sym = np.where(redraw, rng.random(n) < mix.p_sym[c_det], sym_src[src])
    same = sym == sym_src[src]
    group = 2 * c_det + sym
    comp = np.where(same, comp_src[src], gmm_components(rng, mix, group))
    mode = np.where((k == 0) & selected, 2, same.astype(np.int64))  # 0 fresh, 1 blend, 2 copy
    key = ((group * mix.k_max + comp) * 3 + mode) * 2 + selected
    order, bounds = blocks(key, len(mix.means) * mix.k_max * _MODES)
    eps = rng.standard_normal((n, 12))  # consumed in sorted order
    z_sorted = np.empty((n, 12))
    for kk in np.flatnonzero(np.diff(bounds)):
        lo, hi = bounds[kk], bounds[kk + 1]
        z_sorted[lo:hi] = _block_latents(mix, int(kk), z_src[src[order[lo:hi]]], eps[lo:hi])
    z = np.empty_like(z_sorted)
    z[order] = z_sorted
    return z, sym


def _block_latents(mix: Mixtures, key: int, zs: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """The latents of one block of rows sharing a key (see `detection_latents`), from their
    sources' vectors `zs` and their standard normal draws `eps`."""
    gk, rest = divmod(key, _MODES)
    g, kc = divmod(gk, mix.k_max)
    mode, bright = divmod(rest, 2)
    if mode == 2:
        out = zs
    else:
        mean = mix.means[g, kc]
        keep = mix.keep[g, kc] if mode == 1 else np.zeros(12)
        scale = 1.0 if bright else mix.faint_scale
        dev = np.dot(eps, mix.chols_t[g, kc])
        out = blend_latents(zs if mode == 1 else mean, dev, mean, keep, scale)
    c = g // 2
    d = 11 if g % 2 else 12  # the symmetric state has no newq dimension
    out[:, :d] = apply_uniform_maps(
        out[:, :d], mix.map_start[c, :d], mix.map_step[c, :d], mix.map_vals[c, :d]
    )
    if d == 11:
        out[:, 11] = np.nan
    return out
