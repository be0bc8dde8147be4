"""Settings shared by every command: where the warehouse lives and how DuckDB may use the machine.

Defaults come from environment variables so that `make` targets, CI and users can redirect the
warehouse without editing files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_WAREHOUSE = Path("warehouse/xpipe.duckdb")


@dataclass(frozen=True)
class Settings:
    """Warehouse location and DuckDB resource limits (memory stays bounded at any N)."""

    warehouse: Path = field(
        default_factory=lambda: Path(os.environ.get("XPIPE_WAREHOUSE", str(DEFAULT_WAREHOUSE)))
    )
    memory_limit: str = field(default_factory=lambda: os.environ.get("XPIPE_MEMORY_LIMIT", "2GB"))
    threads: int = field(default_factory=lambda: int(os.environ.get("XPIPE_THREADS", "0")))
    temp_directory: Path | None = field(
        default_factory=lambda: (
            Path(os.environ["XPIPE_TEMP_DIR"]) if os.environ.get("XPIPE_TEMP_DIR") else None
        )
    )
    chunk_rows: int = field(
        default_factory=lambda: int(os.environ.get("XPIPE_CHUNK_ROWS", "500000"))
    )

    def resolved_temp_directory(self) -> Path:
        return self.temp_directory or self.warehouse.parent / "tmp"
