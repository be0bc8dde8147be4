"""Properties (`/properties`): any two of the 12 features, or class probabilities, against
each other, for the detections the method used or for their sources (mean values).

References (SIMBAD-labelled) are outlined circles, classified targets plain ones; colour is
the class or a third quantity; log axes drop values ≤ 0 and say how many. Above `max_points`
in view a stable uniform subsample is drawn and the counts are stated; zooming re-queries the
visible box. The filters are mirrored in the URL (shareable views).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

import dash
import polars as pl
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from xpipe.core.errors import InputError
from xpipe.serve import palette, ui
from xpipe.serve.context import PageContext
from xpipe.serve.params import choice, choices, encode, flag
from xpipe.serve.plots import (
    control_style,
    field,
    form,
    marker_size,
    register_zoomable_graph,
    typed,
    view_key,
    zoomable_graph,
)
from xpipe.serve.property_queries import (
    COLOUR_BY_CLASS,
    KINDS,
    LEVELS,
    PropertyData,
    PropertyFilter,
    PropertyView,
    axis_keys,
    axis_label,
)
from xpipe.serve.routing import require_no_subpath
from xpipe.serve.views import UNBOUNDED, Box, zoomed_box
from xpipe.warehouse.seeds import class_names

PATH = "/properties"
TITLE = "Properties"
# References are outlined circles, targets plain ones: WebGL draws circles (with or without an
# outline) in one fast pass; any other symbol costs 2-3× more per point (software rendering).
MARKERS: dict[str, dict[str, Any]] = {"target": {"line": {"width": 0}},
                                       "reference": {"line": {"width": 1.2, "color": "#111111"}}}
MARKER_WORDS = {"reference": "outlined", "target": "plain"}
KIND_WORDS = {"reference": "SIMBAD reference", "target": "classified target"}
_DATA: WeakKeyDictionary[PageContext, PropertyData] = WeakKeyDictionary()  # per app


def property_filter(query: Mapping[str, str]) -> PropertyFilter:
    """The view a URL's query string (or the page's controls) asks for."""
    default = PropertyFilter()
    x = choice(query, "x", axis_keys(), default.x)
    y = choice(query, "y", axis_keys(), default.y)
    return PropertyFilter(
        level=choice(query, "level", LEVELS, default.level), x=x, y=y,
        log_x=flag(query, "log_x"), log_y=flag(query, "log_y"),
        colour=choice(query, "colour", (COLOUR_BY_CLASS, *axis_keys()), default.colour),
        classes=choices(query, "class", class_names()),
        kind=choice(query, "kind", KINDS, default.kind))


def query_of(flt: PropertyFilter) -> dict[str, str]:
    """The URL parameters of a view: those that differ from the default view."""
    default = PropertyFilter()
    pairs: list[tuple[str, Any]] = [
        ("level", flt.level), ("x", flt.x), ("y", flt.y), ("log_x", flt.log_x),
        ("log_y", flt.log_y), ("colour", flt.colour), ("class", flt.classes),
        ("kind", flt.kind)]
    return encode((key, value) for key, value in pairs
                  if value != getattr(default, "classes" if key == "class" else key))


def validate(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> None:
    require_no_subpath(PATH, path_rest)
    property_filter(query)


def _axis_options() -> list[dict[str, str]]:
    return [{"label": axis_label(key), "value": key} for key in axis_keys()]


def layout(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> Component:
    """The page with its first view drawn in (one round trip less than drawing it after)."""
    flt = property_filter(query)
    view = _DATA[ctx].view(flt, None, ctx.settings.max_points)
    logs = [name for name in ("log_x", "log_y") if getattr(flt, name)]
    radio = control_style()
    controls = form([
        field("show", dcc.RadioItems(
            id="props-level", options=list(LEVELS), value=flt.level, **radio)),
        field("x", dcc.Dropdown(id="props-x", options=_axis_options(), value=flt.x,
                                      clearable=False, style={"minWidth": "11em"})),
        field("y", dcc.Dropdown(id="props-y", options=_axis_options(), value=flt.y,
                                      clearable=False, style={"minWidth": "11em"})),
        field("log axes", dcc.Checklist(
            id="props-log", options=[{"label": "x", "value": "log_x"},
                                     {"label": "y", "value": "log_y"}], value=logs, **radio)),
        field("colour", dcc.Dropdown(
            id="props-colour", clearable=False, style={"minWidth": "11em"},
            options=[{"label": "class", "value": COLOUR_BY_CLASS}, *_axis_options()],
            value=flt.colour)),
        field("class", dcc.Dropdown(
            id="props-class", options=list(class_names()), value=list(flt.classes),
            multi=True, placeholder="all classes", style={"minWidth": "16em"})),
        field("rows", dcc.RadioItems(
            id="props-kind", value=flt.kind, **radio,
            options=[{"label": "all", "value": "all"},
                     {"label": "SIMBAD references", "value": "reference"},
                     {"label": "classified targets", "value": "target"}])),
    ])
    return html.Div([
        html.H1(TITLE),
        controls,
        html.Div(id="props-error"),
        html.Div(status(flt, view), id="props-status"),
        *zoomable_graph("props", property_figure(flt, view, None), height="620px",
                        query=query_of(flt)),
        html.P("Detections: the references and classified targets the method used (their "
               "class: the SIMBAD label, or the predicted class). Sources: the mean over "
               "their detections (class: the SIMBAD label, or the master class; sources "
               "whose votes disagree have none). Outlined circles are references, plain ones "
               "targets; "
               "a click opens the source.", className="xp-hint"),
    ])


def register_callbacks(app: dash.Dash, ctx: PageContext) -> None:
    data = _DATA[ctx] = PropertyData(ctx.reader)  # built once, at startup
    resets = ("props-level", "props-x", "props-y", "props-log")  # other axes: whole range

    # One callback draws every change, a zoom included: one round trip per interaction.
    @app.callback(Output("props-graph", "figure"), Output("props-status", "children"),
                  Output("props-error", "children"), Output("props-query", "data"),
                  Output("props-box", "data"),
                  Input("props-level", "value"), Input("props-x", "value"),
                  Input("props-y", "value"), Input("props-log", "value"),
                  Input("props-colour", "value"), Input("props-class", "value"),
                  Input("props-kind", "value"), Input("props-relayout", "data"),
                  State("props-box", "data"), State("props-query", "data"),
                  prevent_initial_call=True)
    def draw(level: str, x: str, y: str, logs: list[str] | None, colour: str,
             classes: list[str] | None, kind: str, relayout: Any, stored_box: Any,
             shown: Any) -> tuple:
        trigger = dash.ctx.triggered_id
        box = None if trigger in resets else Box.from_list(stored_box)
        if trigger == "props-relayout":
            changed, box = zoomed_box(relayout, box, log_x="log_x" in (logs or []),
                                      log_y="log_y" in (logs or []))
            if not changed:
                raise dash.exceptions.PreventUpdate
        query = {"level": level or "", "x": x or "", "y": y or "", "colour": colour or "",
                 "class": ",".join(classes or []), "kind": kind or "",
                 **{name: "1" if name in (logs or []) else "0" for name in ("log_x", "log_y")}}
        try:
            flt = property_filter(query)
        except InputError as exc:
            return (dash.no_update, dash.no_update, ui.message(str(exc), id="props-error-text"),
                    dash.no_update, dash.no_update)
        if trigger != "props-relayout" and query_of(flt) == shown:
            return dash.no_update, dash.no_update, None, dash.no_update, dash.no_update
        view = data.view(flt, box, ctx.settings.max_points)
        stored = None if box is None else box.as_list()
        return (property_figure(flt, view, stored), status(flt, view), None, query_of(flt),
                stored)

    register_zoomable_graph(app, "props")


def status(flt: PropertyFilter, view: PropertyView) -> Component:
    """The counts behind the plot, in words."""
    what = flt.level
    parts = [f"{view.selected:,} {what} match the filters"]
    if view.missing:
        parts.append(f"{view.missing:,} have no value of {axis_label(flt.x)} or "
                     f"{axis_label(flt.y)} (references have no class probabilities)")
    if view.nonpositive:
        parts.append(f"{view.nonpositive:,} excluded by the log scale (value ≤ 0)")
    shown = (f"a uniform subsample of {view.points.height:,} of the {view.in_view:,} in view "
             f"is drawn (more appear as you zoom in)" if view.sampled
             else f"all {view.in_view:,} in view are drawn")
    return ui.message("; ".join(parts) + "; " + shown + ".", error=False,
                      id="props-status-text")


# ---- the figure -----------------------------------------------------------------------------

def property_figure(flt: PropertyFilter, view: PropertyView, box: Any) -> dict[str, Any]:
    """The scatter plot as a plotly figure (plain dicts, no validation cost)."""
    points = view.points
    traces = (_class_traces(points) if flt.colour == COLOUR_BY_CLASS
              else _value_traces(points, axis_label(flt.colour)))
    shown = Box.from_list(box) or UNBOUNDED
    key = view_key(query_of(flt), shown.as_list())
    axis = {"showgrid": True, "gridcolor": "#e6e6e6", "zeroline": False}
    return {"data": traces, "layout": {
        "xaxis": {**axis, **_range(shown.x0, shown.x1, flt.log_x),
                  "title": {"text": axis_label(flt.x)}},
        "yaxis": {**axis, **_range(shown.y0, shown.y1, flt.log_y),
                  "title": {"text": axis_label(flt.y)}},
        "uirevision": f"{flt.level}|{flt.x}|{flt.y}|{flt.log_x}|{flt.log_y}",
        "margin": {"l": 60, "r": 10, "t": 30, "b": 20},
        "legend": {"orientation": "h", "x": 0, "y": -0.12, "yanchor": "top"},
        "plot_bgcolor": "white", "paper_bgcolor": "white", "hovermode": "closest",
        "coloraxis": {"colorscale": "Viridis",
                      "colorbar": {"title": {"text": axis_label(flt.colour)}}},
        "meta": {"view": key},
    }}


def _range(lo: float, hi: float, log: bool) -> dict[str, Any]:
    """An axis's type and, for a zoomed view, its range (a log axis's in decades)."""
    axis: dict[str, Any] = {"type": "log" if log else "linear"}
    if math.isfinite(lo) and math.isfinite(hi):
        axis["range"] = [math.log10(lo), math.log10(hi)] if log else [lo, hi]
    return axis


def _class_traces(points: pl.DataFrame) -> list[dict[str, Any]]:
    """One trace per class and kind; a class is one legend entry (both its markers)."""
    traces: list[dict[str, Any]] = []
    size = marker_size(points.height)
    for cls in (*class_names(), None):
        rows = points.filter(pl.col("class").is_null() if cls is None else pl.col("class") == cls)
        label = cls or "no master class (votes disagree)"
        first = True
        for kind in MARKERS:
            part = rows.filter(pl.col("kind") == kind)
            if part.height:
                trace = _points(part, f"{label} ({rows.height:,})", palette.class_colour(cls),
                                f"{KIND_WORDS[kind]}: {label}", size)
                trace.update(legendgroup=label, showlegend=first)
                traces.append(trace)
                first = False
    return traces + _marker_legend()


def _value_traces(points: pl.DataFrame, label: str) -> list[dict[str, Any]]:
    traces = []
    size = marker_size(points.height)
    for kind in MARKERS:
        rows = points.filter(pl.col("kind") == kind)
        valued = rows.filter(pl.col("colour").is_not_null())
        missing = rows.filter(pl.col("colour").is_null())
        if valued.height:
            trace = _points(valued, f"{KIND_WORDS[kind]}s ({valued.height:,})", "",
                            KIND_WORDS[kind], size)
            trace["marker"].update(color=typed(valued["colour"].to_numpy()),
                                   coloraxis="coloraxis")
            trace["hovertemplate"] = trace["hovertemplate"].replace(
                "<extra>", f"<br>{label} = %{{marker.color:.4g}}<extra>")
            traces.append(trace)
        if missing.height:
            traces.append(_points(missing, f"{KIND_WORDS[kind]}s without {label} "
                                  f"({missing.height:,})", palette.NO_CLASS, KIND_WORDS[kind],
                                  size))
    return traces + _marker_legend()


def _marker_legend() -> list[dict[str, Any]]:
    """Legend entries for the two markers (no points of their own)."""
    return [{"type": "scattergl", "mode": "markers", "x": [None], "y": [None],
             "name": f"{MARKER_WORDS[kind]}: {KIND_WORDS[kind]}s", "hoverinfo": "skip",
             "marker": {**marker, "color": "#999999", "size": 8}}
            for kind, marker in MARKERS.items()]


def _points(part: pl.DataFrame, name: str, colour: str, words: str, size: int
            ) -> dict[str, Any]:
    kind = part["kind"][0]
    return {"type": "scattergl", "mode": "markers", "name": name,
            "x": typed(part["x"].to_numpy()), "y": typed(part["y"].to_numpy()),
            "customdata": part["name"].to_list(),
            "hovertemplate": f"%{{customdata}}<br>{words}<br>(%{{x:.4g}}, %{{y:.4g}})"
                             "<extra></extra>",
            "marker": {"color": colour, "opacity": 0.75, **MARKERS[kind],
                       "size": size + (kind == "reference")}}
