"""Class colours of the explorer, from the one palette the report's figures use
(`science.figures.AGG_COLOURS`): an aggregated class has its colour, and its fine classes
shades of it, in seed order; what has no class is a neutral grey."""

from __future__ import annotations

from functools import cache

from matplotlib.colors import to_hex, to_rgb

from xpipe.science.figures import AGG_COLOURS
from xpipe.warehouse.seeds import aggregated_classes, class_names

NO_CLASS = "#9a9a9a"  # ambiguous sources, and anything without a class
REFERENCE_COLOUR = "#222222"  # SIMBAD references on the sky


def agg_colour(agg_class: str | None) -> str:
    return AGG_COLOURS.get(agg_class or "", NO_CLASS)


def _shade(colour: str, amount: float) -> str:
    """`colour` moved towards black (amount < 0) or white (amount > 0)."""
    target = 1.0 if amount > 0 else 0.0
    r, g, b = (c + (target - c) * abs(amount) for c in to_rgb(colour))
    return to_hex((r, g, b))


@cache
def class_colours() -> dict[str, str]:
    """Fine class → colour: the first class of an aggregated class a darker shade of its
    colour, the next ones lighter."""
    members: dict[str, list[str]] = {}
    for cls in class_names():
        members.setdefault(aggregated_classes()[cls], []).append(cls)
    colours = {}
    for agg, classes in members.items():
        steps = [-0.25 + 0.55 * i / max(1, len(classes) - 1) for i in range(len(classes))]
        for cls, step in zip(classes, steps, strict=True):
            colours[cls] = _shade(agg_colour(agg), step) if len(classes) > 1 else agg_colour(agg)
    return colours


def class_colour(cls: str | None) -> str:
    return class_colours().get(cls or "", NO_CLASS)
