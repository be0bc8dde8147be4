"""An independent reference for the Sky page's coordinates: astropy's galactic frame and the
Hammer–Aitoff formula in NumPy, to check what the explorer computes in SQL."""

from __future__ import annotations

import numpy as np


def galactic(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(l, b) in degrees from ICRS, by astropy."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic
    return coords.l.deg, coords.b.deg


def hammer_aitoff(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map (x, y), longitude increasing to the left, centred on longitude 0."""
    lam = np.radians((np.asarray(lon) + 180.0) % 360.0 - 180.0)
    phi = np.radians(lat)
    norm = np.sqrt(1.0 + np.cos(phi) * np.cos(lam / 2))
    return (-2 * np.sqrt(2) * np.cos(phi) * np.sin(lam / 2) / norm,
            np.sqrt(2) * np.sin(phi) / norm)


def inverse_hammer_aitoff(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in degrees back from the map (lon in [-180, 180))."""
    z = np.sqrt(1 - (x / 4) ** 2 - (y / 2) ** 2)
    lon = np.degrees(2 * np.arctan2(-z * x, 2 * (2 * z**2 - 1)))
    return lon, np.degrees(np.arcsin(z * y))


def map_xy(ra: np.ndarray, dec: np.ndarray, frame: str) -> tuple[np.ndarray, np.ndarray]:
    """What the Sky page should place a source at, in `frame`."""
    lon, lat = galactic(ra, dec) if frame == "galactic" else (ra, dec)
    return hammer_aitoff(lon, lat)
