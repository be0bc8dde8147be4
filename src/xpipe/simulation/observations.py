"""Observation keys of each detection: obsid, obi and region_id, unique per detection and
arranged so a source is seen at most once per observation, as in CSC."""

from __future__ import annotations

import numpy as np

from xpipe.simulation.sources import Sources


def assign_obsids(
    rng: np.random.Generator, field: np.ndarray, sources: Sources, *, obsid_base: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """obsid, obi, region_id per detection: each field is a set of pointings, a source's
    detections fall in distinct pointings of its field, region_id counts within an obsid."""
    counts, src, k = sources.counts, sources.src, sources.k
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
