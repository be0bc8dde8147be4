"""Search (`/search`): classified sources by name prefix (`?name=`) or in a cone (`?ra=&dec=&r=`,
degrees and arcsec), each found source linked to its page. The form writes its search into the
URL, so a search is a link; a URL with a bad search is answered 400 with the reason."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import dash
import polars as pl
from dash import Input, Output, State, dcc, html, no_update
from dash.development.base_component import Component

from xpipe.core.errors import InputError, XpipeError
from xpipe.serve import ui
from xpipe.serve.context import PageContext
from xpipe.serve.routing import number, require_no_subpath

PATH = "/search"
TITLE = "Search"
MAX_ROWS = 200  # results shown; the page says when there are more
MAX_NAME_CHARS = 100
CONE_KEYS = ("ra", "dec", "r")
WIDE = {"width": "11em"}
COLUMNS = ("name, ra, dec, detection_count, hard_class, soft_class, is_unique, master_class, "
           "agg_master_class")


@dataclass(frozen=True)
class Cone:
    ra: float  # degrees
    dec: float
    radius_arcsec: float


@dataclass(frozen=True)
class Search:
    name: str | None = None
    cone: Cone | None = None

    def query_string(self) -> str:
        if self.name is not None:
            return "?" + urlencode({"name": self.name})
        if self.cone is not None:
            return "?" + urlencode({"ra": f"{self.cone.ra:.12g}", "dec": f"{self.cone.dec:.12g}",
                                    "r": f"{self.cone.radius_arcsec:.12g}"})
        return ""


def parse_search(query: Mapping[str, str], max_cone_arcsec: float) -> Search:
    """The search a query string asks for (none: an empty form); InputError naming the
    parameter when a value is missing, not a number or out of range."""
    name = query.get("name", "").strip()
    given = [key for key in CONE_KEYS if query.get(key, "").strip()]
    if name and given:
        raise InputError("search by name or by cone, not both")
    if name:
        if len(name) > MAX_NAME_CHARS:
            raise InputError(f"a name prefix has at most {MAX_NAME_CHARS} characters")
        return Search(name=name)
    if not given:
        return Search()
    missing = [key for key in CONE_KEYS if key not in given]
    if missing:
        raise InputError(f"a cone search needs ra, dec and r; missing {', '.join(missing)}")
    ra = number(query, "ra", low=0.0, high=360.0)
    dec = number(query, "dec", low=-90.0, high=90.0)
    radius = number(query, "r", low=0.0, high=max_cone_arcsec)
    assert ra is not None and dec is not None and radius is not None  # all given
    if radius <= 0:
        raise InputError("parameter r must be a radius above 0 arcsec")
    return Search(cone=Cone(ra % 360.0, dec, radius))


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching names starting with `prefix` literally (ESCAPE '\\')."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def cone_bounds(cone: Cone) -> tuple[float, float, list[tuple[float, float]]]:
    """A box that holds the cone, for DuckDB to prune on before the exact distance: (dec_lo,
    dec_hi, RA intervals). Around a pole the box spans every RA; across RA 0 it is two
    intervals. The RA half-width is asin(sin r / cos dec), exact for a small circle."""
    r = cone.radius_arcsec / 3600.0
    dec_lo, dec_hi = max(-90.0, cone.dec - r), min(90.0, cone.dec + r)
    if dec_lo <= -90.0 or dec_hi >= 90.0:
        return dec_lo, dec_hi, [(0.0, 360.0)]
    ratio = math.sin(math.radians(r)) / math.cos(math.radians(cone.dec))
    half = math.degrees(math.asin(min(1.0, ratio)))
    lo, hi = cone.ra - half, cone.ra + half
    if half >= 180.0 or hi - lo >= 360.0:
        return dec_lo, dec_hi, [(0.0, 360.0)]
    if lo < 0.0:
        return dec_lo, dec_hi, [(lo + 360.0, 360.0), (0.0, hi)]
    if hi > 360.0:
        return dec_lo, dec_hi, [(lo, 360.0), (0.0, hi - 360.0)]
    return dec_lo, dec_hi, [(lo, hi)]


# Haversine separation in arcsec (as sql/ingest/simbad_match.sql: accurate at arcseconds).
SEPARATION = """degrees(2 * asin(sqrt(
    pow(sin(radians(dec - $dec) / 2), 2)
    + cos(radians($dec)) * cos(radians(dec)) * pow(sin(radians(ra - $ra) / 2), 2)
))) * 3600.0"""


def find(ctx: PageContext, search: Search) -> tuple[pl.DataFrame, bool]:
    """The sources found (at most MAX_ROWS) and whether there are more."""
    if search.name is not None:
        frame = ctx.reader.frame(
            f"SELECT {COLUMNS} FROM results.source_class WHERE name ILIKE $pattern ESCAPE '\\' "
            "ORDER BY name LIMIT $n", {"pattern": like_prefix(search.name), "n": MAX_ROWS + 1})
    else:
        assert search.cone is not None
        dec_lo, dec_hi, intervals = cone_bounds(search.cone)
        ra_terms = " OR ".join(f"ra BETWEEN {lo!r} AND {hi!r}" for lo, hi in intervals)
        frame = ctx.reader.frame(
            f"SELECT {COLUMNS}, {SEPARATION} AS separation_arcsec FROM results.source_class "
            f"WHERE dec BETWEEN $dec_lo AND $dec_hi AND ({ra_terms}) "
            "AND separation_arcsec <= $r ORDER BY separation_arcsec, name LIMIT $n",
            {"ra": search.cone.ra, "dec": search.cone.dec, "dec_lo": dec_lo, "dec_hi": dec_hi,
             "r": search.cone.radius_arcsec, "n": MAX_ROWS + 1})
    return frame.head(MAX_ROWS), frame.height > MAX_ROWS


def validate(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> None:
    require_no_subpath(PATH, path_rest)
    parse_search(query, ctx.settings.max_cone_arcsec)


def layout(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> Component:
    search = parse_search(query, ctx.settings.max_cone_arcsec)
    cone = search.cone
    return html.Div([
        html.H1("Search"),
        html.P("Classified sources by the start of their CSC name, or within a radius of a "
               f"position (ICRS degrees; radius at most {ctx.settings.max_cone_arcsec:g} "
               "arcsec)."),
        html.Div([
            html.Label(["name starts with", dcc.Input(
                id="search-name", type="text", value=search.name or "", debounce=True,
                placeholder="2CXO J1234", style={"width": "18em"})]),
            html.Button("find by name", id="search-by-name")], className="xp-form"),
        html.Div([
            html.Label(["ra (deg)", dcc.Input(id="search-ra", type="text", style=WIDE,
                                              value=f"{cone.ra:.12g}" if cone else "")]),
            html.Label(["dec (deg)", dcc.Input(id="search-dec", type="text", style=WIDE,
                                               value=f"{cone.dec:.12g}" if cone else "")]),
            html.Label(["radius (arcsec)", dcc.Input(
                id="search-radius", type="text", style={"width": "7em"},
                value=f"{cone.radius_arcsec:.12g}" if cone else "10")]),
            html.Button("find in cone", id="search-by-cone")], className="xp-form"),
        html.Div(id="search-message"),
        html.Div(results(ctx, search), id="search-results"),
    ])


def results(ctx: PageContext, search: Search) -> list[Component]:
    if search.name is None and search.cone is None:
        return []
    frame, more = find(ctx, search)
    cone = search.cone
    what = (f"within {cone.radius_arcsec:g}″ of ra {cone.ra:g}°, dec {cone.dec:g}°" if cone
            else f"with names starting with {search.name!r}")
    count = (f"Showing the first {MAX_ROWS} sources {what}; there are more: narrow the search"
             if more else f"{frame.height:,} source{'s' if frame.height != 1 else ''} {what}")
    return [html.P(count, id="search-count"),
            *([ui.data_table(frame, id="search-table", link_names=True)] if frame.height
              else [])]


def register_callbacks(app: dash.Dash, ctx: PageContext) -> None:
    @app.callback(Output("url", "search", allow_duplicate=True),
                  Output("search-message", "children"),
                  Input("search-by-name", "n_clicks"), Input("search-name", "n_submit"),
                  Input("search-by-cone", "n_clicks"),
                  State("search-name", "value"), State("search-ra", "value"),
                  State("search-dec", "value"), State("search-radius", "value"),
                  prevent_initial_call=True)
    def submit(_name_clicks: int | None, _name_submit: int | None, _cone_clicks: int | None,
               name: str | None, ra: str | None, dec: str | None, radius: str | None
               ) -> tuple[object, object]:
        if not any(t["value"] for t in dash.ctx.triggered):  # drawn, not clicked
            raise dash.exceptions.PreventUpdate
        by_cone = dash.ctx.triggered_id == "search-by-cone"
        query = ({"ra": ra or "", "dec": dec or "", "r": radius or ""} if by_cone
                 else {"name": name or ""})
        try:
            search = parse_search(query, ctx.settings.max_cone_arcsec)
        except XpipeError as exc:
            return no_update, ui.message(str(exc), id="search-error")
        if search.name is None and search.cone is None:
            return no_update, ui.message("type the start of a name", id="search-error")
        return search.query_string(), None
