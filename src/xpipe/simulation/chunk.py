"""One chunk of the catalogue, stage by stage. Every stage draws from the chunk's generator
in a fixed order (injected outliers and the confidence limits from side streams of their own),
so a chunk depends only on the seed, its index and the params file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xpipe.simulation.calibration import Calibration
from xpipe.simulation.columns import (
    count_rates,
    draw_nulls,
    spectral_columns,
    variability_columns,
    zero_means,
)
from xpipe.simulation.config import SimulationConfig
from xpipe.simulation.detections import draw_features
from xpipe.simulation.draws import chunk_rng
from xpipe.simulation.features import derive_features, paper_selection
from xpipe.simulation.limits import draw_limits
from xpipe.simulation.names import csc_names
from xpipe.simulation.observations import assign_obsids
from xpipe.simulation.outliers import inject_outliers, outlier_table
from xpipe.simulation.simbad import Simbad, simbad_chunk
from xpipe.simulation.sky import place_sources
from xpipe.simulation.sources import Brightness, Sources, draw_brightness, draw_sources
from xpipe.simulation.vocabulary import AGG_CLASS, CLASSES, DETECTION_SCHEMA, TRUTH_SCHEMA

_OUTLIER_STREAM = 1  # spawn key of the outliers' side stream: the rest stays unchanged
_LIMITS_STREAM = 2  # spawn key of the confidence limits' side stream, likewise


@dataclass(frozen=True)
class Chunk:
    tables: dict[str, pa.Table]  # detections, simbad, truth (and outliers when injected)
    stats: dict[str, Any]  # counts, and per-class counts as arrays in CLASSES order


def generate_chunk(
    calibration: Calibration, cfg: SimulationConfig, chunk: int, *, n_chunks: int, n_det: int
) -> Chunk:
    """Chunk `chunk` of `n_chunks`, with `n_det` detections: its tables and counts."""
    rng = chunk_rng(cfg.seed, chunk)
    sources = draw_sources(rng, calibration, n_det)
    bright = draw_brightness(rng, calibration, sources)
    cols = _raw_columns(rng, calibration, sources, bright)
    ra, dec, field, cells = place_sources(
        rng, calibration.sky, sources.cls, chunk=chunk, n_chunks=n_chunks
    )
    names = csc_names(*cells)
    obs = assign_obsids(rng, field, sources, obsid_base=1 + chunk * cfg.chunk_size)
    sim = simbad_chunk(
        rng,
        calibration.simbad,
        sources.cls,
        ra,
        dec,
        chunk=chunk,
        match_fraction=cfg.match_fraction,
        wrong_type_fraction=cfg.wrong_type_fraction,
    )
    matched = sim.truth_ids.is_valid().to_numpy(zero_copy_only=False)
    outliers = None
    if cfg.outlier_fraction > 0:
        orng = chunk_rng(cfg.seed, chunk, _OUTLIER_STREAM)
        eligible = bright.selected & ~matched[sources.src]
        rows, kinds = inject_outliers(orng, cols, eligible, cfg.outlier_fraction)
        outliers = outlier_table(names, sources.src, rows, kinds, obs=obs)
    lrng = chunk_rng(cfg.seed, chunk, _LIMITS_STREAM)  # after every value they bracket is final
    cols |= draw_limits(lrng, cols, calibration.limits, calibration.bounds)
    tables = {
        "detections": _detection_table(names, sources.src, cols, obs=obs, ra=ra, dec=dec),
        "simbad": sim.table,
        "truth": _truth_table(names, sources.cls, sim),
    }
    stats = _chunk_stats(sources, bright.selected, cols, sim=sim, matched=matched)
    if outliers is not None:
        tables["outliers"] = outliers
        stats["n_outliers"] = outliers.num_rows
    return Chunk(tables=tables, stats=stats)


def _raw_columns(
    rng: np.random.Generator, calibration: Calibration, sources: Sources, bright: Brightness
) -> dict[str, np.ndarray]:
    """Every float column of DETECTION_SCHEMA but ra and dec (NaN = null)."""
    x, sym = draw_features(rng, calibration, sources, bright.selected)
    mean = count_rates(rng, calibration.rates, bright.sig, x)
    nulls = draw_nulls(rng, calibration.nulls, bright.selected)
    mean = zero_means(rng, calibration.rates, mean, nulls.mean_zero)
    cols = variability_columns(rng, calibration, x, sym, mean=mean, nulls=nulls)
    cols |= spectral_columns(x, bright, nulls)
    return cols


def _detection_table(
    names: pa.Array,
    src: np.ndarray,
    cols: dict[str, np.ndarray],
    *,
    obs: tuple[np.ndarray, np.ndarray, np.ndarray],
    ra: np.ndarray,
    dec: np.ndarray,
) -> pa.Table:
    """DETECTION_SCHEMA rows from the per-source names and positions (`ra`, `dec`) and the
    per-detection keys and columns."""
    obsid, obi, region_id = obs
    arrays: list[pa.Array] = [
        pc.take(names, pa.array(src)),
        pa.array(obsid, type=pa.int32()),
        pa.array(obi, type=pa.int16()),
        pa.array(region_id, type=pa.int32()),
        pa.array(ra[src]),
        pa.array(dec[src]),
    ]
    for col in DETECTION_SCHEMA.names[6:]:
        v = cols[col]
        if not np.all(np.isfinite(v) | np.isnan(v)):  # pragma: no cover - a bug guard
            raise RuntimeError(f"non-finite values generated in {col}")
        arrays.append(pa.array(v, type=pa.float64(), from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=DETECTION_SCHEMA)


def _truth_table(names: pa.Array, cls: np.ndarray, sim: Simbad) -> pa.Table:
    class_names = pa.array(CLASSES, type=pa.string())
    agg_names = pa.array([AGG_CLASS[c] for c in CLASSES], type=pa.string())
    return pa.Table.from_arrays(
        [
            names,
            pc.take(class_names, pa.array(cls)),
            pc.take(agg_names, pa.array(cls)),
            sim.truth_ids,
            sim.truth_otypes,
        ],
        schema=TRUTH_SCHEMA,
    )


def _chunk_stats(
    sources: Sources,
    selected: np.ndarray,
    cols: dict[str, np.ndarray],
    *,
    sim: Simbad,
    matched: np.ndarray,
) -> dict[str, Any]:
    """What the manifest sums over chunks; also checks the selection bookkeeping."""
    if not np.array_equal(paper_selection(cols), selected):  # pragma: no cover - a bug guard
        raise RuntimeError("selection bookkeeping disagrees with the generated columns")
    sel_idx = np.flatnonzero(selected)
    feats = derive_features({name: v[sel_idx] for name, v in cols.items()})
    complete = np.zeros(len(selected), dtype=bool)
    complete[sel_idx] = np.all(np.isfinite(feats), axis=1)
    nc, c_det = len(CLASSES), sources.c_det
    return {
        "n_detections": len(selected),
        "n_sources": len(sources.counts),
        "n_counterparts": sim.n_counterparts,
        "n_field_objects": sim.n_field_objects,
        "n_selected": int(selected.sum()),
        "n_selected_complete": int(complete.sum()),
        "sources": np.bincount(sources.cls, minlength=nc),
        "detections": np.bincount(c_det, minlength=nc),
        "selected": np.bincount(c_det[selected], minlength=nc),
        "selected_complete": np.bincount(c_det[complete], minlength=nc),
        "with_counterpart": np.bincount(sources.cls[matched], minlength=nc),
    }
