"""The sky pages' projections as SQL expressions, so that DuckDB projects millions of
positions where they are stored and only what a view shows reaches the browser.

Galactic coordinates come from ICRS by the rotation of the Hipparcos catalogue (ESA 1997,
vol. 1, §1.5.3; what astropy uses). The all-sky map is Hammer–Aitoff, centred on longitude 0,
longitude increasing to the left as astronomers draw the sky: x in [-2√2, 2√2], y in [-√2, √2].
"""

from __future__ import annotations

import math
from typing import Literal

Frame = Literal["galactic", "equatorial"]
FRAMES: tuple[Frame, ...] = ("galactic", "equatorial")

# ICRS unit vector → galactic unit vector (rows: the galactic axes in ICRS).
ICRS_TO_GALACTIC = (
    (-0.0548755604162154, -0.8734370902348850, -0.4838350155487132),
    (+0.4941094278755837, -0.4448296299600112, +0.7469822444972189),
    (-0.8676661490190047, -0.1980763734312015, +0.4559837761750669),
)
X_LIMIT = 2.0 * math.sqrt(2.0)  # |x| of the map's edge at latitude 0
Y_LIMIT = math.sqrt(2.0)  # |y| at the poles


def galactic_sql(ra: str, dec: str) -> tuple[str, str]:
    """SQL for (l, b) in degrees, l in [0, 360), from ICRS `ra`, `dec` in degrees."""
    unit = (f"cos(radians({dec})) * cos(radians({ra}))",
            f"cos(radians({dec})) * sin(radians({ra}))",
            f"sin(radians({dec}))")

    def axis(row: tuple[float, float, float]) -> str:
        return " + ".join(f"({c!r}) * {u}" for c, u in zip(row, unit, strict=True))

    gx, gy, gz = (axis(row) for row in ICRS_TO_GALACTIC)
    l_deg = f"((degrees(atan2({gy}, {gx})) + 360.0) % 360.0)"
    b_deg = f"degrees(asin(greatest(-1.0, least(1.0, {gz}))))"
    return l_deg, b_deg


def hammer_aitoff_sql(lon: str, lat: str) -> tuple[str, str]:
    """SQL for the map's (x, y) of longitude `lon` and latitude `lat` in degrees (any
    longitude range: it is wrapped to [-180, 180) around the centre)."""
    half = f"(radians(((({lon}) + 180.0) % 360.0 + 360.0) % 360.0 - 180.0) / 2.0)"
    phi = f"radians({lat})"
    norm = f"sqrt(1.0 + cos({phi}) * cos({half}))"
    x = f"(-{X_LIMIT!r} * cos({phi}) * sin({half}) / {norm})"
    y = f"({Y_LIMIT!r} * sin({phi}) / {norm})"
    return x, y


def frame_lon_lat(frame: Frame, ra: str, dec: str) -> tuple[str, str]:
    """SQL for a frame's (longitude, latitude) of an ICRS position."""
    return galactic_sql(ra, dec) if frame == "galactic" else (ra, dec)
