"""What the Sky and Properties views share: the visible box a zoom asks for, read from
plotly's relayout events, and the vote filter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Votes = Literal["all", "unique", "ambiguous"]
VOTES: tuple[Votes, ...] = ("all", "unique", "ambiguous")


@dataclass(frozen=True)
class Box:
    """The visible rectangle in the plot's data coordinates (±inf: unbounded)."""

    x0: float
    x1: float
    y0: float
    y1: float

    def clip(self, outer: Box) -> Box:
        """This box inside `outer` (and `outer` where this one is unbounded)."""
        return Box(max(self.x0, outer.x0), min(self.x1, outer.x1),
                   max(self.y0, outer.y0), min(self.y1, outer.y1))

    def as_list(self) -> list[float | None]:
        """[x0, x1, y0, y1] as JSON can hold it (None: unbounded)."""
        return [v if math.isfinite(v) else None for v in (self.x0, self.x1, self.y0, self.y1)]

    @classmethod
    def from_list(cls, values: Any) -> Box | None:
        """A box stored by `as_list` (a dcc.Store's value), or None."""
        if not isinstance(values, list | tuple) or len(values) != 4:
            return None
        bounds = [float(v) if v is not None else math.inf * (-1 if i % 2 == 0 else 1)
                  for i, v in enumerate(values)]
        return cls(*bounds)


UNBOUNDED = Box(-math.inf, math.inf, -math.inf, math.inf)


def _axis_range(relayout: Mapping[str, Any], axis: str, log: bool
                ) -> tuple[float, float] | Literal["auto"] | None:
    """An axis's new range from a relayout event: (lo, hi), "auto" (reset), or None (not
    changed by this event). Ranges of a log axis are in decades."""
    if relayout.get(f"{axis}.autorange"):
        return "auto"
    pair = relayout.get(f"{axis}.range")
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        pair = (relayout.get(f"{axis}.range[0]"), relayout.get(f"{axis}.range[1]"))
    bounds = [float(v) for v in pair if isinstance(v, int | float) and math.isfinite(v)]
    if len(bounds) != 2:
        return None
    lo, hi = sorted(bounds)
    return (10.0 ** lo, 10.0 ** hi) if log else (lo, hi)


def zoomed_box(relayout: Mapping[str, Any] | None, prior: Box | None, *, log_x: bool = False,
               log_y: bool = False) -> tuple[bool, Box | None]:
    """(changed, box) after a plotly relayout event: box None is the full view; an event that
    moves neither axis (a resize, a change of drag mode) leaves it unchanged."""
    x = _axis_range(relayout or {}, "xaxis", log_x)
    y = _axis_range(relayout or {}, "yaxis", log_y)
    if x is None and y is None:
        return False, prior
    old = prior or UNBOUNDED

    def pick(new: tuple[float, float] | Literal["auto"] | None, lo: float, hi: float
             ) -> tuple[float, float]:
        return (-math.inf, math.inf) if new == "auto" else (lo, hi) if new is None else new

    box = Box(*pick(x, old.x0, old.x1), *pick(y, old.y0, old.y1))
    return True, None if box == UNBOUNDED else box
