"""Sky (`/sky`): classified sources on an all-sky Hammer–Aitoff map, galactic or equatorial.

Uniquely classified sources are coloured by aggregated master class and ambiguous ones grey;
SIMBAD references and the density of every detected source are layers to switch on. A layer
with more than `max_points` sources in view is drawn as counts on a grid (DuckDB bins them),
and zooming re-queries the visible box, so points appear once few enough are in view. A click
on a source opens its page. The filters are mirrored in the URL (shareable views).

After `xpipe uncertainty`, a minimum class stability filters the classified sources; sources
without published errors (NULL stability: unknown) are kept, hidden or shown alone by the
`errors` choice, never counted as 0 or 1. Without current results the filter says how to get
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

import dash
import numpy as np
import polars as pl
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from xpipe.core.errors import InputError
from xpipe.serve import palette, ui
from xpipe.serve.context import PageContext
from xpipe.serve.params import choice, choices, encode, flag, whole
from xpipe.serve.plots import (
    MAX_DETECTIONS_FILTER,
    control_style,
    field,
    form,
    marker_size,
    register_zoomable_graph,
    typed,
    view_key,
    zoomable_graph,
)
from xpipe.serve.projection import FRAMES
from xpipe.serve.routing import number, require_no_subpath
from xpipe.serve.sky_queries import (
    ERRORS,
    FULL_SKY,
    Bins,
    Layer,
    SkyData,
    SkyFilter,
    SkyView,
)
from xpipe.serve.views import VOTES, Box, zoomed_box
from xpipe.warehouse.seeds import aggregated_class_names

PATH = "/sky"
TITLE = "Sky"
LAYERS = ("references", "density")
LAYER_LABELS = {"references": "SIMBAD references", "density": "all detected sources (density)"}
DENSITY_SCALE = [[0.0, "#efefef"], [1.0, "#5f5f5f"]]
ERROR_LABELS = {"any": "all (without published errors: kept, stability unknown)",
                "with": "with published errors only", "without": "no published errors only"}
_DATA: WeakKeyDictionary[PageContext, SkyData] = WeakKeyDictionary()  # per app


def sky_filter(query: Mapping[str, str]) -> SkyFilter:
    """The view a URL's query string (or the page's controls) asks for."""
    return SkyFilter(
        frame=choice(query, "frame", FRAMES, "galactic"),
        classes=choices(query, "class", aggregated_class_names()),
        votes=choice(query, "votes", VOTES, "all"),
        min_probability=number(query, "min_prob", low=0.0, high=1.0, default=0.0) or 0.0,
        min_detections=whole(query, "min_det", low=1, high=MAX_DETECTIONS_FILTER, default=1),
        min_stability=number(query, "min_stab", low=0.0, high=1.0, default=0.0) or 0.0,
        errors=choice(query, "errors", ERRORS, "any"),
        references=flag(query, "references"),
        density=flag(query, "density"))


def query_of(flt: SkyFilter) -> dict[str, str]:
    """The URL parameters of a view: those that differ from the default view."""
    default = SkyFilter()
    pairs = [("frame", flt.frame), ("class", flt.classes), ("votes", flt.votes),
             ("min_prob", flt.min_probability), ("min_det", flt.min_detections),
             ("min_stab", flt.min_stability), ("errors", flt.errors),
             ("references", flt.references), ("density", flt.density)]
    names = {"class": "classes", "min_prob": "min_probability", "min_det": "min_detections",
             "min_stab": "min_stability"}
    return encode((key, value) for key, value in pairs
                  if value != getattr(default, names.get(key, key)))


def validate(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> None:
    require_no_subpath(PATH, path_rest)
    _DATA[ctx].check(sky_filter(query))


def layout(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> Component:
    """The page with its first view drawn in (one round trip less than drawing it after)."""
    flt = sky_filter(query)
    data = _DATA[ctx]
    view = data.view(flt, None, ctx.settings.max_points)
    layers = [name for name in LAYERS if getattr(flt, name)]
    radio = control_style()
    controls = form([
        field("frame", dcc.RadioItems(
            id="sky-frame", options=list(FRAMES), value=flt.frame, **radio)),
        field("aggregated class", dcc.Dropdown(
            id="sky-class", options=list(aggregated_class_names()), value=list(flt.classes),
            multi=True, placeholder="all classes", style={"minWidth": "16em"})),
        field("votes", dcc.RadioItems(
            id="sky-votes", options=[{"label": v, "value": v} for v in VOTES],
            value=flt.votes, **radio)),
        field("min. mean probability", dcc.Input(
            # text, not number: what is typed reaches the same check as the URL's value
            id="sky-min-prob", type="text", debounce=True,
            value=f"{flt.min_probability:g}", style={"width": "6em"})),
        field("min. detections", dcc.Input(
            id="sky-min-det", type="text", inputMode="numeric", debounce=True,
            value=str(flt.min_detections), style={"width": "6em"})),
        field("min. class stability", dcc.Input(
            id="sky-min-stab", type="text", debounce=True,
            inputMode="decimal",  # type: ignore[arg-type]  # HTML's; not in Dash's list
            value=f"{flt.min_stability:g}", disabled=not data.uncertainty.current,
            style={"width": "6em"})),
        field("published errors", dcc.RadioItems(
            id="sky-errors", options=[{"label": ERROR_LABELS[e], "value": e,
                                       "disabled": not data.uncertainty.current}
                                      for e in ERRORS], value=flt.errors, **radio)),
        field("layers", dcc.Checklist(
            id="sky-layers", options=[{"label": LAYER_LABELS[n], "value": n} for n in LAYERS],
            value=layers, **radio)),
    ])
    return html.Div([
        html.H1(TITLE),
        controls,
        html.Div(id="sky-error"),
        stability_note(data),
        html.Div(status(view), id="sky-status"),
        *zoomable_graph("sky", sky_figure(data, flt, view), height="640px",
                        query=query_of(flt)),
        html.P("A layer with more than the point limit in view is drawn as counts per bin; "
               "zoom in (drag a box, or scroll) to see its sources one by one, and click one "
               "to open it. Double-click shows the whole sky again. The minimum mean "
               "probability is that of the master class (for ambiguous sources, of the "
               "soft-vote class); an ambiguous source matches a class filter by either vote. "
               "The class stability is the share of the draws of `xpipe uncertainty` in which "
               "the source's votes give its stored outcome; a source without published errors "
               "has none (unknown): 'all' keeps it whatever the minimum, the other choices "
               "hide it or show only such sources.", className="xp-hint"),
    ])


def register_callbacks(app: dash.Dash, ctx: PageContext) -> None:
    data = _DATA[ctx] = SkyData(ctx.reader)  # built once, at startup
    data.warm(ctx.settings.max_points)

    # One callback draws every change, a zoom included: one round trip per interaction.
    @app.callback(Output("sky-graph", "figure"), Output("sky-status", "children"),
                  Output("sky-error", "children"), Output("sky-query", "data"),
                  Output("sky-box", "data"),
                  Input("sky-frame", "value"), Input("sky-class", "value"),
                  Input("sky-votes", "value"), Input("sky-min-prob", "value"),
                  Input("sky-min-det", "value"), Input("sky-min-stab", "value"),
                  Input("sky-errors", "value"), Input("sky-layers", "value"),
                  Input("sky-relayout", "data"), State("sky-box", "data"),
                  State("sky-query", "data"), prevent_initial_call=True)
    def draw(frame: str, classes: list[str] | None, votes: str, min_prob: Any, min_det: Any,
             min_stab: Any, errors: str, layers: list[str] | None, relayout: Any,
             stored_box: Any, shown: Any) -> tuple:
        trigger = dash.ctx.triggered_id
        box = None if trigger == "sky-frame" else Box.from_list(stored_box)
        if trigger == "sky-relayout":
            changed, box = zoomed_box(relayout, box)
            if not changed:
                raise dash.exceptions.PreventUpdate
        box = box.clip(FULL_SKY) if box is not None else None
        try:
            flt = sky_filter(_controls_query(frame, classes, votes, min_prob, min_det, min_stab,
                                             errors, layers))
            data.check(flt)
        except InputError as exc:
            return (dash.no_update, dash.no_update, ui.message(str(exc), id="sky-error-text"),
                    dash.no_update, dash.no_update)
        if trigger != "sky-relayout" and query_of(flt) == shown:
            # the view on screen already (a number box losing focus sends its value again)
            return dash.no_update, dash.no_update, None, dash.no_update, dash.no_update
        view = data.view(flt, box, ctx.settings.max_points)
        return (sky_figure(data, flt, view), status(view), None, query_of(flt),
                None if box is None else box.as_list())

    register_zoomable_graph(app, "sky")


def _controls_query(frame: str, classes: list[str] | None, votes: str, min_prob: Any,
                    min_det: Any, min_stab: Any, errors: str | None, layers: list[str] | None
                    ) -> dict[str, str]:
    """The controls' values as URL parameters (an empty box means its default)."""
    query = {"frame": frame or "", "class": ",".join(classes or []), "votes": votes or "",
             "errors": errors or ""}
    for key, value in (("min_prob", min_prob), ("min_det", min_det), ("min_stab", min_stab)):
        query[key] = "" if value is None else str(value)
    for name in LAYERS:
        query[name] = "1" if name in (layers or []) else "0"
    return query


def stability_note(data: SkyData) -> Component:
    """Why the stability filter is off (no uncertainty results, or stale ones)."""
    if data.uncertainty.current:
        return html.Div(id="sky-stability-note")
    return ui.message("class-stability filter off: " + data.uncertainty.message(),
                      error=False, id="sky-stability-note")


def status(view: SkyView) -> Component:
    """What the map shows, in words: counts in view, and which layers are binned."""
    parts = [_layer_words(view.classified, "classified sources")]
    if view.no_errors:
        parts[0] += (f" ({view.no_errors:,} without published errors: class stability "
                     "unknown)")
    if view.references is not None:
        parts.append(_layer_words(view.references, "SIMBAD references"))
    if view.density is not None:
        parts.append(f"{view.density.total:,} detected sources in view, shown as a density")
    return ui.message("; ".join(parts) + ".", error=False, id="sky-status-text")


def _layer_words(layer: Layer, what: str) -> str:
    if layer.bins is not None:
        rows, cols = layer.bins.counts.shape
        return f"{layer.total:,} {what} in view, shown binned ({cols} × {rows} bins)"
    return f"{layer.total:,} {what} in view, drawn one by one"


# ---- the figure -----------------------------------------------------------------------------

def sky_figure(data: SkyData, flt: SkyFilter, view: SkyView) -> dict[str, Any]:
    """The map as a plotly figure: plain dicts, numbers as typed arrays (plotly's validation
    and JSON lists cost more than the query)."""
    traces = []
    if view.density is not None and view.density.bins is not None:
        traces.append(_heatmap(view.density.bins, "all detected sources", DENSITY_SCALE, 0.6,
                               colorbar=False))
    traces.append(_graticule(data))  # over the density, under the sources
    traces += _classified_traces(view.classified)
    if view.references is not None:
        traces += _reference_traces(view.references)
    key = view_key(query_of(flt), view.box.as_list())
    return {"data": traces, "layout": _layout(flt.frame, view.box, key)}


def _layout(frame: str, box: Box, key: str) -> dict[str, Any]:
    # constrain="domain": with equal aspect, plotly fits the plot area to the box rather than
    # widening the box, so what is drawn is exactly what was queried
    axis = {"visible": False, "showgrid": False, "zeroline": False, "constrain": "domain"}
    return {
        "xaxis": {**axis, "range": [box.x0, box.x1]},
        "yaxis": {**axis, "range": [box.y0, box.y1], "scaleanchor": "x",
                  "scaleratio": 1},
        "uirevision": frame,  # zoom survives filter changes, not a change of frame
        "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        "plot_bgcolor": "white", "paper_bgcolor": "white",
        "hovermode": "closest", "dragmode": "zoom",
        "meta": {"view": key, "frame": frame},
    }


def _graticule(data: SkyData) -> dict[str, Any]:
    x, y = data.graticule_lines()
    return {"type": "scatter", "mode": "lines", "x": typed(x), "y": typed(y),
            "hoverinfo": "skip", "showlegend": False, "connectgaps": False,
            "line": {"color": "#a0a0a0", "width": 0.7}, "name": "graticule"}


def _heatmap(bins: Bins, name: str, colorscale: Any, opacity: float, *, colorbar: bool
             ) -> dict[str, Any]:
    counts = bins.counts
    z = np.where(counts > 0, np.log10(np.maximum(counts, 1)), np.nan)
    trace: dict[str, Any] = {
        "type": "heatmap", "name": name, "x": typed(bins.x_centres), "y": typed(bins.y_centres),
        "z": typed(z), "customdata": typed(counts.astype(np.int32)),
        "colorscale": colorscale, "opacity": opacity, "showscale": colorbar,
        "hovertemplate": f"%{{customdata:,}} {name} in this bin<extra></extra>",
        "hoverongaps": False, "zsmooth": False,
    }
    if colorbar:
        trace["colorbar"] = {"title": {"text": "log₁₀ sources per bin"}, "len": 0.6}
    return trace


def _classified_traces(layer: Layer) -> list[dict[str, Any]]:
    if layer.bins is not None:
        return [_heatmap(layer.bins, "classified sources", "Viridis", 0.85, colorbar=True)]
    points = layer.points if layer.points is not None else pl.DataFrame()
    traces = []
    size = marker_size(points.height)
    groups = [(agg, pl.col("is_unique") & (pl.col("agg_master_class") == agg))
              for agg in aggregated_class_names()]
    groups.append(("ambiguous", ~pl.col("is_unique")))
    for label, condition in groups:
        part = points.filter(condition) if points.height else points
        if part.height:
            colour = palette.NO_CLASS if label == "ambiguous" else palette.agg_colour(label)
            words = ("votes disagree" if label == "ambiguous"
                     else f"uniquely classified, aggregated class {label}")
            trace = _points(part, f"{label} ({part.height:,})", colour, words)
            trace["marker"]["size"] = size
            traces.append(trace)
    return traces


def _reference_traces(layer: Layer) -> list[dict[str, Any]]:
    if layer.bins is not None:
        bins = layer.bins
        return [{"type": "contour", "name": "SIMBAD references (binned)",
                 "x": typed(bins.x_centres), "y": typed(bins.y_centres),
                 "z": typed(np.log10(np.maximum(bins.counts, 0.5))),
                 "contours": {"coloring": "lines", "showlabels": False},
                 "colorscale": "Reds", "showscale": False, "line": {"width": 1},
                 "hoverinfo": "skip", "showlegend": True, "ncontours": 6}]
    points = layer.points if layer.points is not None else pl.DataFrame()
    traces: list[dict[str, Any]] = []
    for agg in aggregated_class_names():
        part = points.filter(pl.col("agg_class") == agg) if points.height else points
        if part.height:
            # dark circles: any other symbol costs several times more to draw in WebGL
            trace = _points(part, f"SIMBAD references ({points.height:,})",
                            palette.REFERENCE_COLOUR, f"SIMBAD reference, aggregated class {agg}")
            trace.update(legendgroup="references", showlegend=not traces)
            trace["marker"].update(size=3, opacity=0.6)
            traces.append(trace)
    return traces


def _points(part: pl.DataFrame, name: str, colour: str, words: str) -> dict[str, Any]:
    return {"type": "scattergl", "mode": "markers", "name": name,
            "x": typed(part["x"].to_numpy()), "y": typed(part["y"].to_numpy()),
            "customdata": part["name"].to_list(),
            "hovertemplate": f"%{{customdata}}<br>{words}<extra></extra>",
            "marker": {"color": colour, "size": 4, "opacity": 0.85}}
