"""The Properties page's data: the detections the method used — SIMBAD references and
classified targets — or their sources (a source by the mean of its detections' features and
probabilities), any two of the 12 features or class probabilities against each other.

At startup `PropertyData` copies those rows into the explorer's in-memory DuckDB. A view
counts what its filters and visible box hold; above the point limit it draws a uniform
subsample of them (the rows with the smallest hash of their key, so a point stays drawn as
the user zooms in, where the subsample becomes denser), and says how many it drew of how many.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from xpipe.serve.memory import MemoryTables
from xpipe.serve.reader import WarehouseReader
from xpipe.serve.views import Box
from xpipe.warehouse.contracts import quote_ident
from xpipe.warehouse.seeds import class_names, feature_names

Level = Literal["detections", "sources"]
LEVELS: tuple[Level, ...] = ("detections", "sources")
Kind = Literal["all", "reference", "target"]
KINDS: tuple[Kind, ...] = ("all", "reference", "target")
COLOUR_BY_CLASS = "class"


def probability_axis(cls: str) -> str:
    """The axis key of a class probability (`p_QSO`)."""
    return f"p_{cls}"


def axis_keys() -> tuple[str, ...]:
    """Every quantity an axis can show: the 12 features, then the class probabilities."""
    return feature_names() + tuple(probability_axis(c) for c in class_names())


def axis_label(key: str) -> str:
    """How an axis is titled: a feature by its name, a probability as P(class)."""
    return f"P({key[2:]})" if key not in feature_names() else key


def _detections_sql() -> str:
    features = ", ".join(f"f.{quote_ident(f)}" for f in feature_names())
    probabilities = ", ".join(f"c.{quote_ident(c)} AS {quote_ident(probability_axis(c))}"
                              for c in class_names())
    return f"""
        WITH labelled AS (
            SELECT f.det_id, f.name, r.role AS kind,
                   CASE WHEN r.role = 'reference' THEN r.label_class ELSE c.pred_class END
                       AS class,
                   {features}, {probabilities}
            FROM model.detection_features AS f
            JOIN model.detection_roles AS r USING (det_id)
            LEFT JOIN results.detection_class AS c USING (det_id)
            WHERE r.role = 'reference' OR c.pred_class IS NOT NULL
        )
        SELECT l.*, k.agg_class FROM labelled AS l LEFT JOIN model.classes AS k USING (class)"""


VOTES_SQL = """
    SELECT s.name, s.master_class, s.agg_master_class FROM results.source_class AS s"""


def _sources_select() -> str:
    """In memory: a source's mean quantities; its class is its SIMBAD label (references) or
    its master class (targets; NULL when its votes disagree)."""
    means = ", ".join(f"avg(d.{quote_ident(k)}) AS {quote_ident(k)}" for k in axis_keys())
    return f"""
        SELECT d.name, any_value(d.kind) AS kind,
               CASE WHEN any_value(d.kind) = 'reference' THEN any_value(d.class)
                    ELSE any_value(v.master_class) END AS class,
               CASE WHEN any_value(d.kind) = 'reference' THEN any_value(d.agg_class)
                    ELSE any_value(v.agg_master_class) END AS agg_class,
               count(*) AS detection_count, {means},
               hash(d.name) AS sample_key
        FROM prop_detections AS d
        LEFT JOIN prop_votes AS v USING (name)
        GROUP BY d.name"""


@dataclass(frozen=True)
class PropertyFilter:
    """What the Properties page shows (each field mirrors a URL parameter)."""

    level: Level = "detections"
    x: str = "hard_ms"
    y: str = "hard_hm"
    log_x: bool = False
    log_y: bool = False
    colour: str = COLOUR_BY_CLASS  # "class" or an axis key
    classes: tuple[str, ...] = ()  # the classes shown; empty: all (and unclassed sources)
    kind: Kind = "all"


@dataclass(frozen=True)
class PropertyView:
    """The rows a view's filters select, how many of them it cannot place (no value on an
    axis; ≤ 0 on a log axis), how many fall in the box, and the points drawn."""

    selected: int
    missing: int
    nonpositive: int
    in_view: int
    points: pl.DataFrame
    seconds: float = field(default=0.0, compare=False)

    @property
    def sampled(self) -> bool:
        return self.points.height < self.in_view


class PropertyData:
    """The Properties page's tables in the explorer's memory database, and its views."""

    def __init__(self, reader: WarehouseReader, memory: MemoryTables | None = None) -> None:
        self.memory = memory or MemoryTables()
        start = time.perf_counter()
        detections = reader.frame(_detections_sql())
        # both tables in subsample order: a view's first rows are its subsample
        self.memory.load("prop_detections", detections, select="*, hash(det_id) AS sample_key",
                         order="sample_key")
        self.memory.load("prop_votes", reader.frame(VOTES_SQL))
        self.memory.load("prop_sources", self.memory.frame(_sources_select()), order="sample_key")
        self.load_seconds = time.perf_counter() - start

    def view(self, flt: PropertyFilter, box: Box | None, max_points: int) -> PropertyView:
        """The rows `flt` selects, inside `box` (data units; everything when None)."""
        start = time.perf_counter()
        table = f"prop_{flt.level}"
        x, y = quote_ident(flt.x), quote_ident(flt.y)
        where, params = _filter_where(flt)
        placed = f"{x} IS NOT NULL AND {y} IS NOT NULL"
        positive = " AND ".join([f"{x} > 0"] * flt.log_x + [f"{y} > 0"] * flt.log_y) or "TRUE"
        box = box or Box(float("-inf"), float("inf"), float("-inf"), float("inf"))
        in_box = f"{x} BETWEEN ? AND ? AND {y} BETWEEN ? AND ?"
        box_args = [box.x0, box.x1, box.y0, box.y1]
        counts = self.memory.frame(f"""
            SELECT count(*) AS selected,
                   count(*) FILTER (WHERE NOT ({placed})) AS missing,
                   count(*) FILTER (WHERE {placed} AND NOT ({positive})) AS nonpositive,
                   count(*) FILTER (WHERE {placed} AND {positive} AND {in_box}) AS in_view
            FROM {table} WHERE {where}""", [*box_args, *params]).row(0, named=True)
        colour = "" if flt.colour == COLOUR_BY_CLASS else f", {quote_ident(flt.colour)} AS colour"
        # no ORDER BY: the table is stored in sample_key order, which DuckDB keeps for a query
        # without one (preserve_insertion_order), so the scan stops at the first max_points
        points = self.memory.frame(f"""
            SELECT {x} AS x, {y} AS y, name, kind, class, agg_class{colour}
            FROM {table}
            WHERE {where} AND {placed} AND {positive} AND {in_box}
            LIMIT ?""", [*params, *box_args, max_points])
        return PropertyView(counts["selected"], counts["missing"], counts["nonpositive"],
                            counts["in_view"], points, time.perf_counter() - start)


def _filter_where(flt: PropertyFilter) -> tuple[str, list[object]]:
    parts, params = ["TRUE"], list[object]()
    if flt.classes:
        parts.append("list_contains(?, class)")
        params.append(list(flt.classes))
    if flt.kind != "all":
        parts.append("kind = ?")
        params.append(flt.kind)
    return " AND ".join(parts), params
