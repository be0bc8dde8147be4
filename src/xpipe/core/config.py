"""Settings shared by every command: where the warehouse lives and how DuckDB may use the machine.

Defaults come from environment variables so that `make` targets, CI and users can redirect the
warehouse without editing files. Every `XPIPE_*` variable is checked where it is read: a value
out of range is an `InputError` naming the variable, its value and what is expected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from xpipe.core.errors import InputError

DEFAULT_WAREHOUSE = Path("warehouse/xpipe.duckdb")
# Below ~1,000 rows a chunk costs more in its DuckDB query and NumPy conversion than in its
# arithmetic (0 divides by zero, and negative values silently meant tiny chunks); results do not
# depend on the chunk size, only speed and memory do.
MIN_CHUNK_ROWS = 1_000
# A DuckDB size: a positive number and a unit (1000^i or 1024^i bytes), or a share of RAM.
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|bytes|kb|mb|gb|tb|kib|mib|gib|tib|%)\s*$",
                   re.IGNORECASE)


def _invalid(name: str, value: str, expected: str) -> InputError:
    return InputError(f"environment variable {name}={value!r}: expected {expected}")


def _int_variable(name: str, default: int, minimum: int, expected: str) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise _invalid(name, value, expected) from None
    if number < minimum:
        raise _invalid(name, value, expected)
    return number


def _memory_limit() -> str:
    value = os.environ.get("XPIPE_MEMORY_LIMIT")
    if value is None or not value.strip():
        return "2GB"
    match = _SIZE.match(value)
    if match is None or float(match.group(1)) <= 0:
        raise _invalid("XPIPE_MEMORY_LIMIT", value,
                       "a positive DuckDB size such as 2GB, 512MB, 1.5GiB or 80%")
    return value.strip()


def _path_variable(name: str, *, directory: bool, expected: str) -> Path | None:
    """A path from `name` (None when unset) that, where it exists, is a directory or not as
    `directory` says (the warehouse is a file, the temp directory a folder)."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    path = Path(value)
    if "\x00" in value:
        raise _invalid(name, value, "a file system path")
    if path.exists() and path.is_dir() != directory:
        raise _invalid(name, value, f"{expected} (it is a {'file' if directory else 'directory'})")
    return path


@dataclass(frozen=True)
class Settings:
    """Warehouse location and DuckDB resource limits (memory stays bounded at any N)."""

    warehouse: Path = field(
        default_factory=lambda: _path_variable(
            "XPIPE_WAREHOUSE", directory=False,
            expected="a DuckDB file path such as warehouse/xpipe.duckdb") or DEFAULT_WAREHOUSE)
    memory_limit: str = field(default_factory=_memory_limit)
    threads: int = field(default_factory=lambda: _int_variable(
        "XPIPE_THREADS", 0, 0, "an integer ≥ 0 (0: every core)"))
    temp_directory: Path | None = field(
        default_factory=lambda: _path_variable("XPIPE_TEMP_DIR", directory=True,
                                               expected="a directory"))
    chunk_rows: int = field(default_factory=lambda: _int_variable(
        "XPIPE_CHUNK_ROWS", 500_000, MIN_CHUNK_ROWS, f"an integer ≥ {MIN_CHUNK_ROWS:,}"))

    def resolved_temp_directory(self) -> Path:
        return self.temp_directory or self.warehouse.parent / "tmp"
