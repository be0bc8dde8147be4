"""Where sources lie: clumped in fields (Chandra pointings) placed on the galactic sky per
class, each source nudged until its CSC name is unique in its chunk and in no other. The
rotation between frames is a fixed matrix, so the hot path needs no astropy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from xpipe.simulation.names import (
    DEC_CELLS,
    RA_CELLS,
    chunk_residues,
    csc_name_cells,
    nudge_to_residue,
)
from xpipe.simulation.vocabulary import CLASSES

ARCSEC = 1.0 / 3600.0
_MAX_NAME_ROUNDS = 200

# ICRS -> galactic rotation (Hipparcos/ICRS definition, as in astropy); galactic -> ICRS is
# its transpose.
_ICRS_TO_GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669],
    ]
)
NameCells = tuple[np.ndarray, np.ndarray, np.ndarray]


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


def _per_class(sky: Mapping[str, Any], key: str) -> np.ndarray:
    return np.array([sky["classes"][c][key] for c in CLASSES])


def sample_sky(
    rng: np.random.Generator, sky: Mapping[str, Any], cls: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) per item: a thin-disc component, a low-latitude 'zone' component and an
    isotropic component avoiding |b| < b_avoid, mixed per class."""
    n = len(cls)
    plane = _per_class(sky, "plane_fraction")[cls]
    zone = _per_class(sky, "zone_fraction")[cls]
    scale = _per_class(sky, "plane_b_scale_deg")[cls]
    l_sigma = _per_class(sky, "plane_l_sigma_deg")[cls]
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


def place_sources(
    rng: np.random.Generator, sky: Mapping[str, Any], cls: np.ndarray, *, chunk: int, n_chunks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, NameCells]:
    """Sky positions clumped in fields, nudged so the CSC name is unique in this chunk and in
    no other chunk. Returns ra, dec, field index, name cells."""
    ra, dec, field = _scatter_in_fields(rng, sky, cls)
    cells = _unique_name_cells(rng, ra, dec, chunk_residues(chunk, n_chunks))
    return ra, dec, field, cells


def _scatter_in_fields(
    rng: np.random.Generator, sky: Mapping[str, Any], cls: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each class fills its own fields (sources_per_field each); sources are uniform in a
    disc around their field's centre."""
    n = len(cls)
    n_cls = np.bincount(cls, minlength=len(CLASSES))
    per_field = _per_class(sky, "sources_per_field")
    n_fields = np.where(n_cls > 0, np.maximum(1, np.ceil(n_cls / per_field)), 0).astype(np.int64)
    field_base = np.cumsum(n_fields) - n_fields
    field = field_base[cls] + (rng.random(n) * n_fields[cls]).astype(np.int64)
    field_cls = np.repeat(np.arange(len(CLASSES)), n_fields)
    fl, fb = sample_sky(rng, sky, field_cls)
    f_ra, f_dec = galactic_to_icrs(fl, fb)
    radius_arcmin = _per_class(sky, "field_radius_arcmin")[cls]
    r = radius_arcmin / 60.0 * np.sqrt(rng.random(n))
    ra, dec = offset_positions(f_ra[field], f_dec[field], r, rng.random(n) * 2 * np.pi)
    return ra, dec, field


def _unique_name_cells(
    rng: np.random.Generator, ra: np.ndarray, dec: np.ndarray, residues: tuple[int, ...]
) -> NameCells:
    """Snap positions (in place) into this chunk's name cells; move a duplicate a few arcsec
    (a neighbouring source in the same field) and snap again until every name is unique."""
    n = len(ra)
    todo = np.arange(n)
    ra_cell = np.empty(n, dtype=np.int64)
    dec_cell = np.empty(n, dtype=np.int64)
    neg = np.empty(n, dtype=bool)
    for _ in range(_MAX_NAME_ROUNDS):
        ra_cell[todo], dec_cell[todo], neg[todo] = _snap_to_cells(ra, dec, todo, residues)
        key = (dec_cell * 2 + neg) * RA_CELLS + ra_cell
        _, first = np.unique(key, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        todo = np.flatnonzero(dup)
        if todo.size == 0:
            return ra_cell, dec_cell, neg
        ra[todo], dec[todo] = offset_positions(
            ra[todo],
            dec[todo],
            (2.0 + 8.0 * rng.random(todo.size)) * ARCSEC,
            rng.random(todo.size) * 2 * np.pi,
        )
    raise RuntimeError(  # pragma: no cover - needs ~10^5 sources per square arcminute
        "could not make source names unique within a chunk"
    )


def _snap_to_cells(
    ra: np.ndarray, dec: np.ndarray, todo: np.ndarray, residues: tuple[int, ...]
) -> NameCells:
    """Move rows `todo` (in place) into the nearest cell of this chunk's residue class,
    keeping the sub-cell fraction but away from cell edges, so any truncation agrees."""
    dec_res, dec_mod, ra_res, ra_mod = residues
    rc, dc, ng = csc_name_cells(ra[todo], dec[todo])
    rc = nudge_to_residue(rc, ra_res, ra_mod)
    dc = nudge_to_residue(np.minimum(dc, DEC_CELLS - 1), dec_res, dec_mod)
    fr = np.clip(
        ra[todo] * (RA_CELLS / 360.0) - np.floor(ra[todo] * (RA_CELLS / 360.0)),
        1e-6,
        1 - 1e-6,
    )
    fd = np.clip(np.abs(dec[todo]) * 3600.0 - np.floor(np.abs(dec[todo]) * 3600.0), 1e-6, 1 - 1e-6)
    ra[todo] = (rc + fr) * (360.0 / RA_CELLS)
    dec[todo] = np.where(ng, -1.0, 1.0) * (dc + fd) / 3600.0
    return rc, dc, ng
