"""SIMBAD's TAP service: configuration and the upload cross-match query.

METHOD §5: the label of a source is its best SIMBAD match within 1″ of the master position.
SIMBAD accepts uploads of at most 200,000 rows, so positions go up in chunks; the service
returns every `basic` object within the radius (a slightly wider circle, so that rounding in
the service's geometry never loses a pair at the edge), and the best match is chosen locally
by the same rule as the offline cross-match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from xpipe.core.errors import InputError
from xpipe.services.tap import TapServiceConfig
from xpipe.services.votable import arrow_to_astropy

SIMBAD_UPLOAD_LIMIT = 200_000
UPLOAD_NAME = "xpipe_sources"
EDGE_MARGIN = 1.001  # the service circle is this much wider than the match radius


@dataclass(frozen=True, kw_only=True)
class SimbadConfig(TapServiceConfig):
    """SIMBAD TAP and how the cross-match is chunked (`row_limit`: the MAXREC of a chunk's
    candidates)."""

    url: str = "https://simbad.cds.unistra.fr/simbad/sim-tap"
    table: str = "basic"  # unqualified, as SIMBAD names it
    radius_arcsec: float = 1.0
    chunk_rows: int = SIMBAD_UPLOAD_LIMIT
    row_limit: int = 1_000_000
    timeout_s: float = 600.0
    job_timeout_s: float = 7200.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.chunk_rows <= SIMBAD_UPLOAD_LIMIT:
            raise InputError(f"SIMBAD uploads hold at most {SIMBAD_UPLOAD_LIMIT:,} rows; "
                             f"chunk of {self.chunk_rows:,} requested")
        if self.radius_arcsec <= 0:
            raise InputError(f"match radius must be positive, got {self.radius_arcsec} arcsec")


def upload_table(sources: pa.Table) -> Any:
    """The uploaded positions (name, ra, dec) as the astropy table pyvo sends."""
    return arrow_to_astropy(sources.select(["name", "ra", "dec"]))


def candidates_query(table: str, radius_arcsec: float) -> str:
    """Every `basic` object near each uploaded position (name, ra, dec)."""
    radius_deg = radius_arcsec * EDGE_MARGIN / 3600.0
    return (
        f"SELECT u.name, b.main_id, b.otype, b.ra, b.dec "
        f"FROM TAP_UPLOAD.{UPLOAD_NAME} AS u JOIN {table} AS b "
        f"ON 1 = CONTAINS(POINT('ICRS', b.ra, b.dec), "
        f"CIRCLE('ICRS', u.ra, u.dec, {radius_deg!r}))"
    )
