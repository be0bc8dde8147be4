"""Locate the SQL models and table schemas, in a source checkout or in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/xpipe (or the installed package)


def _resource_dir(name: str) -> Path:
    """The checkout's top-level folder wins, so edits to `sql/` take effect without reinstalling."""
    candidates = [_PACKAGE_DIR.parents[1] / name, _PACKAGE_DIR / "_resources" / name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"xpipe resource folder {name!r} not found; looked in {searched}")


def sql_dir() -> Path:
    return _resource_dir("sql")


def schemas_dir() -> Path:
    return _resource_dir("schemas")
