"""What every page is given: the warehouse to read, the server's settings, and where the SQL
page's downloads wait to be fetched."""

from __future__ import annotations

from dataclasses import dataclass, field

from xpipe.serve.downloads import DownloadStore
from xpipe.serve.reader import WarehouseReader
from xpipe.serve.settings import ServeSettings


@dataclass(frozen=True)
class PageContext:
    reader: WarehouseReader
    settings: ServeSettings
    downloads: DownloadStore = field(default_factory=DownloadStore)
