"""Identifiers: CSC names from positions (by truncation, like CSC) kept unique across chunks
by giving each chunk its own residue class of name cells, and SIMBAD-like main_ids. Built as
fixed-width byte matrices, so no Python loop runs over rows."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

RA_CELLS = 864_000  # 0.1 s of time over 24 h
DEC_CELLS = 324_000  # 1 arcsec over 90 deg


def csc_name_cells(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, ...]:
    """The name grid cell of each position, by truncation like CSC.

    Returns (ra_cell, dec_cell, negative): ra_cell counts 0.1 s of time, dec_cell whole
    arcseconds of |dec|, negative is the sign of dec.
    """
    ra_cell = np.floor(np.asarray(ra_deg) * (RA_CELLS / 360.0)).astype(np.int64)
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


def simbad_main_ids(chunk: int, n: int) -> pa.Array:
    """`XSIM cccccc-nnnnnnnnnn`: unique across chunks, numbered in table order."""
    return _fixed_width_strings(
        [
            b"XSIM ",
            _digits(np.full(n, chunk, dtype=np.int64), 6),
            b"-",
            _digits(np.arange(n, dtype=np.int64), 10),
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
