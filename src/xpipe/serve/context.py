"""What every page is given: the warehouse to read and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass

from xpipe.serve.reader import WarehouseReader
from xpipe.serve.settings import ServeSettings


@dataclass(frozen=True)
class PageContext:
    reader: WarehouseReader
    settings: ServeSettings
