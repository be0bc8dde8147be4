"""The Sky page's data: classified sources, SIMBAD references and every detected source on
an all-sky map, each layer as points or, when a view holds more than the point limit, as
counts on an x/y grid — always computed in DuckDB, never shipped whole to the browser.

At startup `SkyData` copies one row per source into the explorer's in-memory DuckDB, with its
map coordinates in both frames already computed (`projection`): a source's position is that of
its first classified detection for the classified layer (results.source_class, as the
published tables give it), and that of its first detection (lowest det_id) for the references
and the density of all sources. A request then filters and aggregates those tables only.

A classified source carries its class stability (results.source_class_stability) when the
uncertainty results are current for the stored classification; NULL means "no published
errors" (unknown), which the filter treats apart (`errors`), never as 0 or 1.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from xpipe.core.errors import InputError
from xpipe.predict.uncertainty import UncertaintyState, uncertainty_state
from xpipe.serve.memory import MemoryTables
from xpipe.serve.projection import FRAMES, Frame, frame_lon_lat, hammer_aitoff_sql
from xpipe.serve.reader import WarehouseReader
from xpipe.serve.views import Box, Votes

GRID_COLUMNS = 200  # bins across the visible width when a layer is drawn as counts
CONTOUR_COLUMNS = 60  # coarser bins for the references' contour lines
BINNED_VIEWS_KEPT = 64  # binned layers remembered (a few hundred kB each at most)
FULL_SKY = Box(-3.0, 3.0, -1.5, 1.5)  # the whole map, with a margin


def _xy_columns(ra: str, dec: str) -> str:
    """`x_galactic, y_galactic, x_equatorial, y_equatorial` (FLOAT) of an ICRS position."""
    out = []
    for frame in FRAMES:
        x, y = hammer_aitoff_sql(*frame_lon_lat(frame, ra, dec))
        out += [f"CAST({x} AS FLOAT) AS x_{frame}", f"CAST({y} AS FLOAT) AS y_{frame}"]
    return ",\n    ".join(out)


# One row per source of the catalogue: its first detection's position, and its SIMBAD label
# class where that label made it a reference (model.source_labels).
SOURCES_SQL = f"""
WITH positions AS (
    SELECT name, arg_min(ra, det_id) AS ra, arg_min(dec, det_id) AS dec
    FROM model.stg_detections
    GROUP BY name
)
SELECT
    CASE WHEN l.role = 'reference' THEN p.name END AS name,
    l.label_class AS class,
    c.agg_class AS agg_class,
    {_xy_columns("p.ra", "p.dec")}
FROM positions AS p
LEFT JOIN model.source_labels AS l ON l.name = p.name AND l.role = 'reference'
LEFT JOIN model.classes AS c ON c.class = l.label_class
"""

# Which sources the stability filter keeps: "any" (those without published errors too: their
# stability is unknown, so the minimum does not apply to them), "with" (a stability, at least
# the minimum) or "without" (only those without published errors).
Errors = Literal["any", "with", "without"]
ERRORS: tuple[Errors, ...] = ("any", "with", "without")


def classified_sql(with_stability: bool) -> str:
    """One row per classified source: its votes, the aggregated classes of both votes (the
    class filter matches an ambiguous source by either), the mean probability of its
    soft-vote class (for a uniquely classified source, its master class), and its class
    stability (NULL without current uncertainty results or without published errors)."""
    stability = ("st.class_stability" if with_stability else "CAST(NULL AS DOUBLE)")
    join = ("LEFT JOIN results.source_class_stability AS st ON st.name = s.name"
            if with_stability else "")
    return f"""
SELECT
    s.name, s.detection_count, s.is_unique, s.master_class, s.agg_master_class,
    s.hard_class, s.soft_class, hc.agg_class AS hard_agg_class, sc.agg_class AS soft_agg_class,
    p.mean_probability AS master_probability, {stability} AS class_stability,
    {_xy_columns("s.ra", "s.dec")}
FROM results.source_class AS s
JOIN results.source_class_probs AS p ON p.name = s.name AND p.class = s.soft_class
LEFT JOIN model.classes AS hc ON hc.class = s.hard_class
LEFT JOIN model.classes AS sc ON sc.class = s.soft_class
{join}
"""


@dataclass(frozen=True)
class SkyFilter:
    """What the Sky page shows (each field mirrors a URL parameter)."""

    frame: Frame = "galactic"
    classes: tuple[str, ...] = ()  # aggregated classes; empty: all
    votes: Votes = "all"
    min_probability: float = 0.0
    min_detections: int = 1
    min_stability: float = 0.0
    errors: Errors = "any"
    references: bool = False
    density: bool = False

    @property
    def uses_stability(self) -> bool:
        return self.min_stability > 0 or self.errors != "any"


@dataclass(frozen=True)
class Bins:
    """Counts on a regular grid over `box`: counts[j, i] is row j (y), column i (x)."""

    box: Box
    counts: np.ndarray

    @property
    def x_centres(self) -> np.ndarray:
        nx = self.counts.shape[1]
        return self.box.x0 + (np.arange(nx) + 0.5) * (self.box.x1 - self.box.x0) / nx

    @property
    def y_centres(self) -> np.ndarray:
        ny = self.counts.shape[0]
        return self.box.y0 + (np.arange(ny) + 0.5) * (self.box.y1 - self.box.y0) / ny


@dataclass(frozen=True)
class Layer:
    """One layer of a view: how many rows fall in it, and either the points or their bins."""

    total: int
    points: pl.DataFrame | None = None
    bins: Bins | None = None

    @property
    def binned(self) -> bool:
        return self.bins is not None


@dataclass(frozen=True)
class SkyView:
    box: Box
    classified: Layer
    references: Layer | None = None
    density: Layer | None = None
    seconds: float = field(default=0.0, compare=False)
    no_errors: int | None = None  # classified sources in view without published errors


def grid_shape(box: Box, columns: int = GRID_COLUMNS) -> tuple[int, int]:
    """(rows, columns) of square bins over `box`, `columns` across."""
    rows = round(columns * (box.y1 - box.y0) / (box.x1 - box.x0))
    return max(1, min(rows, 4 * columns)), columns


class SkyData:
    """The Sky page's tables in the explorer's memory database, and the views drawn from them."""

    def __init__(self, reader: WarehouseReader, memory: MemoryTables | None = None) -> None:
        self.memory = memory or MemoryTables()
        self._binned: OrderedDict[tuple, Bins] = OrderedDict()
        self._lock = threading.Lock()
        start = time.perf_counter()
        self.uncertainty: UncertaintyState = reader.cached("uncertainty-state",
                                                           uncertainty_state)
        sources = reader.frame(SOURCES_SQL)
        xy = ", ".join(f"{a}_{f}" for f in FRAMES for a in "xy")
        self.memory.load("sky_sources", sources, select=xy)
        self.memory.load("sky_references", sources, select="*", where="name IS NOT NULL")
        self.memory.load("sky_classified",
                         reader.frame(classified_sql(self.uncertainty.current)))
        self._graticule = self.graticule()
        self.load_seconds = time.perf_counter() - start

    def check(self, flt: SkyFilter) -> None:
        """A stability filter needs current uncertainty results: say how to get them."""
        if flt.uses_stability and not self.uncertainty.current:
            raise InputError("the class-stability filter (min_stab, errors) needs the "
                             "uncertainty results: " + self.uncertainty.message())

    def view(self, flt: SkyFilter, box: Box | None, max_points: int) -> SkyView:
        """The layers `flt` asks for inside `box` (the whole sky when None)."""
        self.check(flt)
        start = time.perf_counter()
        box = box or FULL_SKY
        x, y = f"x_{flt.frame}", f"y_{flt.frame}"
        where, params = _classified_where(flt)
        classified = self._layer("sky_classified", where, params, x, y, box, max_points,
                                 CLASSIFIED_COLUMNS)
        references = density = None
        if flt.references:
            ref_where, ref_params = _class_where("agg_class", flt.classes)
            references = self._layer("sky_references", ref_where, ref_params, x, y, box,
                                     max_points, REFERENCE_COLUMNS, CONTOUR_COLUMNS)
        if flt.density:
            density = self._layer("sky_sources", "TRUE", [], x, y, box, 0, "")
        no_errors = None
        if self.uncertainty.current:
            no_errors = int(self.memory.scalar(
                f"SELECT count(*) FROM sky_classified WHERE ({where}) AND class_stability IS "
                f"NULL AND {x} BETWEEN ? AND ? AND {y} BETWEEN ? AND ?",
                [*params, box.x0, box.x1, box.y0, box.y1]))
        return SkyView(box, classified, references, density, time.perf_counter() - start,
                       no_errors)

    def _layer(self, table: str, where: str, params: list[object], x: str, y: str, box: Box,
               max_points: int, columns: str, grid_columns: int = GRID_COLUMNS) -> Layer:
        in_box = f"{x} BETWEEN ? AND ? AND {y} BETWEEN ? AND ?"
        cond = f"({where}) AND {in_box}"
        args = [*params, box.x0, box.x1, box.y0, box.y1]
        total = int(self.memory.scalar(f"SELECT count(*) FROM {table} WHERE {cond}", args))
        if total <= max_points:
            points = self.memory.frame(
                f"SELECT {x} AS x, {y} AS y, {columns} FROM {table} WHERE {cond}", args)
            return Layer(total, points=points)
        return Layer(total, bins=self._bins(table, cond, args, x, y, box, grid_columns))

    def _bins(self, table: str, cond: str, args: list[object], x: str, y: str, box: Box,
              grid_columns: int) -> Bins:
        """Counts per bin, remembered: binning every source at 10⁷ detections takes a few
        tenths of a second, and the density and reference layers do not change with the
        classified sources' filters."""
        key = (table, cond, repr(args), x, y, box, grid_columns)
        with self._lock:
            if key in self._binned:
                self._binned.move_to_end(key)
                return self._binned[key]
        bins = self._count_bins(table, cond, args, x, y, box, grid_columns)
        with self._lock:
            self._binned[key] = bins
            while len(self._binned) > BINNED_VIEWS_KEPT:
                self._binned.popitem(last=False)
        return bins

    def warm(self, max_points: int) -> None:
        """Bin the whole sky's layers once now, in both frames (what a first visit shows)."""
        for frame in FRAMES:
            self.view(SkyFilter(frame=frame, references=True, density=True), None, max_points)

    def _count_bins(self, table: str, cond: str, args: list[object], x: str, y: str, box: Box,
                    grid_columns: int) -> Bins:
        rows, cols = grid_shape(box, grid_columns)
        dx, dy = (box.x1 - box.x0) / cols, (box.y1 - box.y0) / rows
        cells = self.memory.frame(
            f"SELECT least(CAST(floor(({x} - ?) / ?) AS INTEGER), {cols - 1}) AS i, "
            f"least(CAST(floor(({y} - ?) / ?) AS INTEGER), {rows - 1}) AS j, count(*) AS n "
            f"FROM {table} WHERE {cond} GROUP BY ALL", [box.x0, dx, box.y0, dy, *args])
        counts = np.zeros((rows, cols), dtype=np.int64)
        counts[cells["j"].to_numpy(), cells["i"].to_numpy()] = cells["n"].to_numpy()
        return Bins(box, counts)

    def graticule(self, step: int = 30, resolution: int = 2) -> pl.DataFrame:
        """Lines of constant longitude and latitude every `step` degrees, plus the map's
        edge: columns line, x, y (points of a line in order)."""
        x, y = hammer_aitoff_sql("lon", "lat")
        edge = 180.0 - 1e-9
        return self.memory.frame(f"""
            WITH lines AS (
                SELECT 'lon ' || m AS line, m AS lon, lat
                FROM range(-180, 180, {step}) AS a(m),
                     range(-90, 90 + {resolution}, {resolution}) AS b(lat)
                WHERE m > -180
                UNION ALL
                SELECT 'edge ' || e, e, lat
                FROM (VALUES (-{edge}), ({edge})) AS a(e),
                     range(-90, 90 + {resolution}, {resolution}) AS b(lat)
                UNION ALL
                SELECT 'lat ' || p, lon, p
                FROM range(-90 + {step}, 90, {step}) AS a(p),
                     range(-180, 180 + {resolution}, {resolution}) AS b(lon)
            )
            SELECT line, {x} AS x, {y} AS y FROM (
                SELECT line, least(greatest(lon, -{edge}), {edge}) AS lon, lat FROM lines)
            ORDER BY line, lon, lat""")

    def graticule_lines(self) -> tuple[np.ndarray, np.ndarray]:
        """The graticule as one x and one y array, lines separated by NaN (a plotly gap)."""
        xs, ys = [], []
        for _, part in self._graticule.group_by("line", maintain_order=True):
            xs += [part["x"].to_numpy(), np.array([np.nan])]
            ys += [part["y"].to_numpy(), np.array([np.nan])]
        return np.concatenate(xs), np.concatenate(ys)



CLASSIFIED_COLUMNS = ("name, is_unique, master_class, agg_master_class, hard_class, soft_class, "
                      "master_probability, detection_count, class_stability")
REFERENCE_COLUMNS = "name, class, agg_class"


def _class_where(column: str, classes: tuple[str, ...]) -> tuple[str, list[object]]:
    if not classes:
        return "TRUE", []
    return f"list_contains(?, {column})", [list(classes)]


def _classified_where(flt: SkyFilter) -> tuple[str, list[object]]:
    """SQL condition and its parameters for the classified layer's filters."""
    parts = ["master_probability >= ?", "detection_count >= ?"]
    params: list[object] = [flt.min_probability, flt.min_detections]
    if flt.errors == "with":
        parts.append("class_stability >= ?")
        params.append(flt.min_stability)
    elif flt.errors == "without":
        parts.append("class_stability IS NULL")
    elif flt.min_stability > 0:
        parts.append("(class_stability IS NULL OR class_stability >= ?)")
        params.append(flt.min_stability)
    if flt.votes != "all":
        parts.append("is_unique" if flt.votes == "unique" else "NOT is_unique")
    if flt.classes:
        parts.append("(CASE WHEN is_unique THEN list_contains(?, agg_master_class) "
                     "ELSE list_contains(?, hard_agg_class) OR list_contains(?, soft_agg_class) "
                     "END)")
        params += [list(flt.classes)] * 3
    return " AND ".join(parts), params
