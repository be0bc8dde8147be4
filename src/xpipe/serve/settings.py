"""What `xpipe serve` is allowed to do and how much it sends to a browser."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Where the server listens and its limits: `max_points` is the most points a view draws
    one by one (above it DuckDB aggregates), `sql_max_rows` the rows the SQL page shows (the
    download has them all), `sql_time_limit_s` when a query is interrupted, `max_cone_arcsec`
    the largest cone search radius; the SQL page's downloads wait on disk, at most
    `download_max_pending` files of at most `download_max_bytes`, each link valid for
    `download_expiry_s` and one fetch."""

    allow_sql: bool
    host: str = "127.0.0.1"
    port: int = 8765
    max_points: int = 50_000
    sql_max_rows: int = 1_000
    sql_time_limit_s: float = 10.0
    max_cone_arcsec: float = 3600.0
    download_max_pending: int = 4
    download_max_bytes: int = 4 * 2**30
    download_expiry_s: float = 600.0


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) only listens on this machine: the SQL page is on
    by default there and off elsewhere, since a query can read local files."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)
