"""Reading a view's URL parameters: one choice among options, a list of them, a switch, a
whole number. Each refuses a bad value with an InputError naming the parameter, the value and
what is expected (the page shows it; a URL gets HTTP 400)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

from xpipe.core.errors import InputError
from xpipe.serve.routing import number

ON, OFF = "1", "0"
T = TypeVar("T", bound=str)


def _shown(value: str) -> str:
    return repr(value[:40])


def choice(query: Mapping[str, str], key: str, options: Sequence[T], default: T) -> T:
    """One of `options` (the default when absent or empty)."""
    raw = query.get(key, "").strip()
    if not raw:
        return default
    for option in options:
        if raw == option:
            return option
    raise InputError(f"parameter {key}={_shown(raw)} is not one of: {', '.join(options)}")


def choices(query: Mapping[str, str], key: str, options: Sequence[str]) -> tuple[str, ...]:
    """A comma-separated subset of `options`, in the options' order (empty when absent)."""
    raw = query.get(key, "").strip()
    picked = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = sorted(picked - set(options))
    if unknown:
        raise InputError(f"parameter {key}: unknown value(s) {', '.join(map(_shown, unknown))};"
                         f" expected a comma-separated list of: {', '.join(options)}")
    return tuple(option for option in options if option in picked)


def flag(query: Mapping[str, str], key: str) -> bool:
    """A switch: 1 (on) or 0 (off, the default)."""
    return choice(query, key, (ON, OFF), OFF) == ON


def whole(query: Mapping[str, str], key: str, *, low: int, high: int, default: int) -> int:
    """A whole number in [low, high]."""
    value = number(query, key, low=low, high=high, default=default)
    if value is None or value != int(value):
        raise InputError(f"parameter {key}={_shown(query.get(key, ''))} is not a whole number")
    return int(value)


def encode(pairs: Iterable[tuple[str, str | bool | float | Sequence[str]]]) -> dict[str, str]:
    """The URL parameters of a view, each value as the readers above expect it."""
    out = {}
    for key, value in pairs:
        if isinstance(value, bool):
            out[key] = ON if value else OFF
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, float | int):
            out[key] = f"{value:g}"
        else:
            out[key] = ",".join(value)
    return out
