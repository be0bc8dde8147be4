"""The SIMBAD-like object table of a chunk: counterparts of a share of the sources (with
otype noise and positional scatter) plus unrelated field objects for the matcher to reject,
shuffled so identifiers reveal nothing; and each source's link to its counterpart (truth)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xpipe.simulation.draws import cdf, choose, pick
from xpipe.simulation.names import simbad_main_ids
from xpipe.simulation.sky import ARCSEC, offset_positions
from xpipe.simulation.vocabulary import AGG_CLASS, CLASSES, OWN_OTYPE, SIMBAD_SCHEMA


@dataclass(frozen=True)
class Simbad:
    """A chunk's SIMBAD table and its links to the chunk's sources."""

    table: pa.Table  # SIMBAD_SCHEMA
    truth_ids: pa.Array  # main_id of each source's counterpart, null without one
    truth_otypes: pa.Array  # its otype
    n_counterparts: int
    n_field_objects: int


@dataclass(frozen=True)
class _Objects:
    """Positions and otype codes of some SIMBAD objects."""

    ra: np.ndarray
    dec: np.ndarray
    otype: np.ndarray  # index into otype_codes


def simbad_chunk(
    rng: np.random.Generator,
    sp: Mapping[str, Any],
    cls: np.ndarray,
    ra_src: np.ndarray,
    dec_src: np.ndarray,
    *,
    chunk: int,
    match_fraction: float,
    wrong_type_fraction: float,
) -> Simbad:
    """Counterparts (with otype noise and positional scatter) plus unrelated field objects."""
    n_src = len(cls)
    code_idx = {c: i for i, c in enumerate(sp["otype_codes"])}
    cp_src = np.flatnonzero(rng.random(n_src) < match_fraction)
    otype = counterpart_otypes(rng, sp, cls[cp_src], code_idx, wrong_fraction=wrong_type_fraction)
    cp_ra, cp_dec = _counterpart_positions(rng, sp["positions"], ra_src[cp_src], dec_src[cp_src])
    field = _field_objects(rng, sp["field_objects"], code_idx, ra_src, dec_src, n_cp=cp_src.size)
    all_ra = np.concatenate([cp_ra, field.ra])
    all_dec = np.concatenate([cp_dec, field.dec])
    all_otype = np.concatenate([otype, field.otype])
    perm = rng.permutation(all_ra.size)
    main_id = simbad_main_ids(chunk, all_ra.size)
    table = pa.Table.from_arrays(
        [
            main_id,
            pc.take(pa.array(list(sp["otype_codes"]), type=pa.string()), pa.array(all_otype[perm])),
            pa.array(all_ra[perm]),
            pa.array(all_dec[perm]),
        ],
        schema=SIMBAD_SCHEMA,
    )
    take_idx = _counterpart_rows(perm, cp_src, n_src)
    return Simbad(
        table=table,
        truth_ids=pc.take(main_id, take_idx),
        truth_otypes=pc.take(table.column("otype").combine_chunks(), take_idx),
        n_counterparts=int(cp_src.size),
        n_field_objects=int(field.ra.size),
    )


def _counterpart_rows(perm: np.ndarray, cp_src: np.ndarray, n_src: int) -> pa.Array:
    """Row of each source's counterpart in the shuffled table (null without one)."""
    where = np.empty(perm.size, dtype=np.int64)
    where[perm] = np.arange(perm.size)
    src_row = np.full(n_src, -1, dtype=np.int64)
    src_row[cp_src] = where[: cp_src.size]
    return pa.array(np.where(src_row >= 0, src_row, 0), mask=src_row < 0)


def counterpart_otypes(
    rng: np.random.Generator,
    sp: Mapping[str, Any],
    cp_cls: np.ndarray,
    code_idx: Mapping[str, int],
    *,
    wrong_fraction: float,
) -> np.ndarray:
    """otype code of each counterpart: its class's own code, an uninformative or a rare one,
    and for a `wrong_fraction` share another reference class."""
    n_cp = cp_cls.size
    otype = np.empty(n_cp, dtype=np.int64)
    wrong = rng.random(n_cp) < wrong_fraction
    u = rng.random((4, n_cp))  # category, code, wrong group, wrong pick
    for ci, c in enumerate(CLASSES):
        sel = cp_cls == ci
        if not sel.any():
            continue
        own = _reported_otypes(sp["classes"][c], c, code_idx, u_cat=u[0][sel], u_code=u[1][sel])
        wrong_code = _wrong_otypes(
            c, code_idx, sp["wrong_same_group_fraction"], u_group=u[2][sel], u_pick=u[3][sel]
        )
        otype[sel] = np.where(wrong[sel], wrong_code, own)
    return otype


def _reported_otypes(
    spec: Mapping[str, Any],
    c: str,
    code_idx: Mapping[str, int],
    *,
    u_cat: np.ndarray,
    u_code: np.ndarray,
) -> np.ndarray:
    """The class's own code, or one of its uninformative or rare codes."""
    category = np.searchsorted(
        cdf([spec["own"], spec["uninformative"], spec["rare"]]), u_cat, side="right"
    )
    out = np.full(u_cat.size, code_idx[OWN_OTYPE[c]], dtype=np.int64)
    for cat_i, key in ((1, "uninformative_codes"), (2, "rare_codes")):
        m = category == cat_i
        codes = np.array([code_idx[x] for x in spec[key]])
        out[m] = codes[pick(cdf(list(spec[key].values())), u_code[m])]
    return out


def _wrong_otypes(
    c: str,
    code_idx: Mapping[str, int],
    same_group_fraction: float,
    *,
    u_group: np.ndarray,
    u_pick: np.ndarray,
) -> np.ndarray:
    """Another reference class's code: mostly a sibling in the same aggregated class."""
    same = [code_idx[OWN_OTYPE[o]] for o in CLASSES if o != c and AGG_CLASS[o] == AGG_CLASS[c]]
    other = [code_idx[OWN_OTYPE[o]] for o in CLASSES if AGG_CLASS[o] != AGG_CLASS[c]]
    pick_same = np.array(same)[(u_pick * len(same)).astype(np.int64)]
    pick_other = np.array(other)[(u_pick * len(other)).astype(np.int64)]
    return np.where(u_group < same_group_fraction, pick_same, pick_other)


def _counterpart_positions(
    rng: np.random.Generator, pos: Mapping[str, Any], ra: np.ndarray, dec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A tight core plus a tail beyond 1" around the source."""
    n_cp = ra.size
    tail = rng.random(n_cp) < pos["tail_fraction"]
    r_core = rng.rayleigh(pos["core_sigma_arcsec"], n_cp)
    r_tail = pos["tail_start_arcsec"] + rng.exponential(pos["tail_scale_arcsec"], n_cp)
    r = np.where(tail, r_tail, r_core) * ARCSEC
    return offset_positions(ra, dec, r, rng.random(n_cp) * 2 * np.pi)


def _field_objects(
    rng: np.random.Generator,
    fo: Mapping[str, Any],
    code_idx: Mapping[str, int],
    ra_src: np.ndarray,
    dec_src: np.ndarray,
    *,
    n_cp: int,
) -> _Objects:
    """Unrelated objects: some a few arcsec from a source, some inside the match radius
    (confusers), the rest anywhere on the sky."""
    n_src = ra_src.size
    n_field = round(fo["per_counterpart"] * n_cp) if n_src else 0
    near, close = fo["near_fraction"], fo["close_fraction"]
    kind = choose(rng, cdf([near, close, 1 - near - close]), n_field)
    anchor = rng.integers(0, max(n_src, 1), n_field)
    r_near = fo["near_min_arcsec"] + (fo["near_max_arcsec"] - fo["near_min_arcsec"]) * rng.random(
        n_field
    )
    r_close = rng.rayleigh(fo["close_sigma_arcsec"], n_field)
    rad = np.where(kind == 0, r_near, r_close) * ARCSEC
    ra, dec = offset_positions(
        ra_src[anchor] if n_src else np.zeros(n_field),
        dec_src[anchor] if n_src else np.zeros(n_field),
        rad,
        rng.random(n_field) * 2 * np.pi,
    )
    rand = kind == 2
    ra[rand] = rng.random(int(rand.sum())) * 360.0
    dec[rand] = np.degrees(np.arcsin(2.0 * rng.random(int(rand.sum())) - 1.0))
    codes = np.array([code_idx[x] for x in fo["otypes"]])
    otype = codes[choose(rng, cdf(list(fo["otypes"].values())), n_field)]
    return _Objects(ra=ra, dec=dec, otype=otype)
