"""The Chandra Source Catalog TAP services: configuration, pages and the detection query.

METHOD §1: each detection (observation_source) reaches its master source through the stack
tables, and the paper's query returns the master source's name and position with it. The
CSC services have no ADQL geometry, so pages are RA/Dec boxes written as plain comparisons
on the master position; a box contains every detection of each master source inside it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

from xpipe.core.errors import InputError
from xpipe.services.tap import TapServiceConfig

MIN_BOX_DEG = 1e-4  # below this (0.36″) a box holds one source: split by obsid instead
OBSID_END = 2**31


@dataclass(frozen=True, kw_only=True)
class CscConfig(TapServiceConfig):
    """One CSC release's service, and how the pull pages it (`row_limit`: the MAXREC of a
    page; a page counted above it is split unfetched)."""

    release: str  # csc20 | csc21: what the user names
    schema: str  # csc2 | csc21: the ADQL schema of the tables
    sync_row_limit: int = 10_000  # pages with more rows run as async jobs
    band_deg: float = 2.0  # top-level pages: Dec bands this wide


CSC_RELEASES: dict[str, CscConfig] = {
    "csc20": CscConfig("http://cda.cfa.harvard.edu/csc2tap", release="csc20", schema="csc2"),
    "csc21": CscConfig("http://cda.cfa.harvard.edu/csc21tap", release="csc21", schema="csc21"),
}

# Columns of raw.detections that come from the master source or the master-stack association
# rather than the detection.
MASTER_COLUMNS = ("name", "ra", "dec")
STACK_COLUMNS = ("detect_stack_id", "match_type")


def _fmt(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class Box:
    """dec in [dec_lo, dec_hi), ra in [ra_lo, ra_hi) of the master position (an edge at +90
    or 360 is closed), and obsid in [obsid_lo, obsid_hi): a single source with more
    detections than a page holds is paged by observation."""

    dec_lo: float
    dec_hi: float
    ra_lo: float = 0.0
    ra_hi: float = 360.0
    obsid_lo: int = 0
    obsid_hi: int = OBSID_END

    def where(self) -> str:
        dec_op = "<=" if self.dec_hi >= 90.0 else "<"
        ra_op = "<=" if self.ra_hi >= 360.0 else "<"
        parts = [f"m.dec >= {_fmt(self.dec_lo)}", f"m.dec {dec_op} {_fmt(self.dec_hi)}"]
        if self.ra_lo > 0.0 or self.ra_hi < 360.0:
            parts += [f"m.ra >= {_fmt(self.ra_lo)}", f"m.ra {ra_op} {_fmt(self.ra_hi)}"]
        if self.obsid_lo > 0 or self.obsid_hi < OBSID_END:
            parts += [f"o.obsid >= {self.obsid_lo}", f"o.obsid < {self.obsid_hi}"]
        return " AND ".join(parts)

    def _spatial(self) -> bool:
        return max(self.dec_hi - self.dec_lo, self.ra_hi - self.ra_lo) > MIN_BOX_DEG

    def splittable(self) -> bool:
        return self._spatial() or self.obsid_hi - self.obsid_lo > 1

    def split(self) -> tuple[Box, Box]:
        """Halve the longer side on the sky (RA lengths shrink by cos dec); a box too small
        to hold two sources is halved in obsid."""
        if not self._spatial():
            mid_obsid = (self.obsid_lo + self.obsid_hi) // 2
            return replace(self, obsid_hi=mid_obsid), replace(self, obsid_lo=mid_obsid)
        mid_dec = (self.dec_lo + self.dec_hi) / 2
        ra_sky = (self.ra_hi - self.ra_lo) * max(math.cos(math.radians(mid_dec)), 1e-3)
        if ra_sky > self.dec_hi - self.dec_lo:
            mid = (self.ra_lo + self.ra_hi) / 2
            return replace(self, ra_hi=mid), replace(self, ra_lo=mid)
        return replace(self, dec_hi=mid_dec), replace(self, dec_lo=mid_dec)

    def label(self) -> str:
        text = (f"dec [{self.dec_lo:.6g}, {self.dec_hi:.6g}) ra [{self.ra_lo:.6g}, "
                f"{self.ra_hi:.6g})")
        if self.obsid_lo > 0 or self.obsid_hi < OBSID_END:
            text += f" obsid [{self.obsid_lo}, {self.obsid_hi})"
        return text


def dec_bands(band_deg: float) -> list[Box]:
    """The top-level pages: Dec bands from -90 to +90, the last one closed at +90."""
    if not 0 < band_deg <= 180:
        raise InputError(f"band width must be in (0, 180] degrees, got {band_deg}")
    n = math.ceil(180.0 / band_deg - 1e-9)
    edges = [-90.0 + i * band_deg for i in range(n)] + [90.0]
    return [Box(lo, hi) for lo, hi in itertools.pairwise(edges)]


def select_list(columns: list[str]) -> str:
    def source(col: str) -> str:
        if col in MASTER_COLUMNS:
            return f"m.{col}"
        if col in STACK_COLUMNS:
            return f"a.{col}"
        return f"o.{col}"

    return ", ".join(source(c) for c in columns)


# METHOD §1's stack-table join from master_source to observation_source, in the form of every
# documented CSC TAP query (the CXC's examples, the paper's CSCview query): the five tables as a
# comma-separated FROM list and the join conditions in WHERE. The CSC services' ADQL parser is
# reported to refuse `JOIN ... ON ... AND ...`, which is never sent.
JOIN_TABLES = (("master_source", "m"), ("master_stack_assoc", "a"), ("stack_source", "s"),
               ("stack_observation_assoc", "b"), ("observation_source", "o"))
JOIN_CONDITIONS = (
    "a.name = m.name",
    "s.detect_stack_id = a.detect_stack_id", "s.region_id = a.region_id",
    "b.detect_stack_id = s.detect_stack_id", "b.region_id = s.region_id",
    "o.obsid = b.obsid", "o.obi = b.obi", "o.region_id = b.region_id",
)


def from_clause(schema: str) -> str:
    """`FROM` with the five tables of the join, comma-separated."""
    return "FROM " + ", ".join(f"{schema}.{table} AS {alias}" for table, alias in JOIN_TABLES)


def where_clause(box: Box | None, *conditions: str) -> str:
    """The join conditions, then the page's bounds and any other conditions, all in WHERE."""
    return "WHERE " + " AND ".join([*JOIN_CONDITIONS, *([box.where()] if box else []),
                                    *conditions])


def adql_string(value: str) -> str:
    """An ADQL string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def detections_query(schema: str, box: Box, columns: list[str]) -> str:
    """The detections of `box` with `columns` (the raw.detections contract's, from the caller),
    as `SELECT DISTINCT` like the documented queries: a row the join reaches twice comes once."""
    return f"SELECT DISTINCT {select_list(columns)} {from_clause(schema)} {where_clause(box)}"


def source_query(schema: str, name: str, columns: list[str]) -> str:
    """Every detection of the master source `name`: the pull's query for one source."""
    return (f"SELECT DISTINCT {select_list(columns)} {from_clause(schema)} "
            f"{where_clause(None, f'm.name = {adql_string(name)}')}")


def count_query(schema: str, box: Box | None = None) -> str:
    """The join's row count (not documented for the CSC services: the pull pages without
    counts when it is refused)."""
    return f"SELECT COUNT(*) AS n {from_clause(schema)} {where_clause(box)}"
