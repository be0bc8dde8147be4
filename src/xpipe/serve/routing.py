"""From a URL to a page: which page module, the rest of its path, its query string; and the
checks every page shares."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from urllib.parse import parse_qsl, unquote

from xpipe.core.errors import InputError, NotFoundError

MAX_QUERY_CHARS = 2_000  # a shareable view's filters fit in far less


def resolve(pages: tuple[ModuleType, ...], path: str) -> tuple[ModuleType, str]:
    """The page whose PATH is `path` or a prefix of it (then `rest` is what follows the
    slash, percent-decoded); NotFoundError when none is."""
    path = "/" + unquote(path or "/").lstrip("/")
    for page in pages:
        if path == page.PATH or path == page.PATH.rstrip("/") + "/":
            return page, ""
        if page.PATH != "/" and path.startswith(page.PATH + "/"):
            return page, path[len(page.PATH) + 1:]
    raise NotFoundError(f"no page at {path}: the pages are "
                        + ", ".join(page.PATH for page in pages))


def parse_query(search: str) -> dict[str, str]:
    """The query string as a dict (a repeated key keeps its last value); InputError when it
    is too long to be a view's filters or is not valid percent-encoded UTF-8."""
    text = (search or "").lstrip("?")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(f"the query string has {len(text):,} characters; at most "
                         f"{MAX_QUERY_CHARS:,} are accepted")
    try:
        return dict(parse_qsl(text, keep_blank_values=True, errors="strict",
                              max_num_fields=100))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"malformed query string {text[:80]!r}: {exc}") from exc


def require_no_subpath(page_path: str, path_rest: str) -> None:
    """For pages that take no path below their own."""
    if path_rest:
        raise NotFoundError(f"no page at {page_path.rstrip('/')}/{path_rest}")


def number(query: Mapping[str, str], key: str, *, low: float, high: float,
           default: float | None = None) -> float | None:
    """A finite number in [low, high] from the query string (None when absent and no
    default); InputError naming the parameter otherwise."""
    raw = query.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"parameter {key}={raw[:40]!r} is not a number") from None
    if not low <= value <= high:  # also refuses nan and inf
        raise InputError(f"parameter {key}={raw[:40]} is out of range: expected a number from "
                         f"{low:g} to {high:g}")
    return value
