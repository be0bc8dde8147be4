"""What the Sky and Properties pages share around their plotly graphs: the graph's
configuration, the URL mirror of a view's filters, the click that opens a source, and the key
that marks which view a drawn figure shows (the latency benchmark waits for it)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import dash
import numpy as np
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from xpipe.serve.ui import source_href

GRAPH_CONFIG: dcc.Graph.Config = {"scrollZoom": True, "displaylogo": False, "responsive": True,
                "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
MAX_DETECTIONS_FILTER = 1_000_000  # the largest "minimum detections" a view accepts

# dcc.Graph calls Plotly.Plots.resize after every first draw (and on each resize event of its
# box), and plotly then redraws the whole figure at its automatic size even when that size has
# not changed: in software WebGL a second draw of 0.2-0.4 s before the page settles. This
# wrapper skips a resize when the graph already has its box's size (the test plotly's own
# autosize makes); any real change of size still redraws. plotly.js loads lazily (on the
# first graph), so the wrapper is installed when `window.Plotly` is set. It also draws WebGL
# at the screen's pixel ratio (plotly's default is 2: four times the pixels on a common
# screen, each WebGL canvas costing that much more to create, clear and composite).
SKIP_SAME_SIZE_RESIZE_JS = """
(function () {
  let plotly;
  function sameSize(gd) {
    const div = typeof gd === 'string' ? document.getElementById(gd) : gd;
    const full = div && div._fullLayout;
    if (!full || !div.layout || div.layout.autosize === false || !div.offsetParent) {
      return null;
    }
    const style = window.getComputedStyle(div);
    return parseFloat(style.width) === full.width && parseFloat(style.height) === full.height
      ? div : null;
  }
  function wrap(value) {
    if (!value || !value.Plots || value.Plots._xpSameSize) { return; }
    const resize = value.Plots.resize;
    value.Plots.resize = function (gd) {
      const div = sameSize(gd);
      return div ? Promise.resolve(div) : resize.apply(this, arguments);
    };
    value.Plots._xpSameSize = true;
    value.setPlotConfig({plotGlPixelRatio: Math.min(4, Math.max(1, window.devicePixelRatio || 1))});
  }
  Object.defineProperty(window, 'Plotly', {
    configurable: true, enumerable: true,
    get: function () { return plotly; },
    set: function (value) { plotly = value; wrap(value); },
  });
})();
"""

# history.replaceState: the address bar follows the filters without a navigation (the router
# re-renders a page when the URL changes; this does not change it for Dash).
_MIRROR_JS = """
function(query) {
    if (!query) { return window.dash_clientside.no_update; }
    const text = new URLSearchParams(query).toString();
    const url = window.location.pathname + (text ? "?" + text : "");
    if (url !== window.location.pathname + window.location.search) {
        window.history.replaceState(window.history.state, "", url);
    }
    return text;
}
"""


def zoomable_graph(page: str, figure: dict[str, Any], *, height: str,
                   query: Mapping[str, str]) -> list[Component]:
    """A page's graph with the stores its one drawing callback and the client-side helpers
    use: the zoom box, the last relayout event, the view's URL parameters and their mirror."""
    return [dcc.Graph(id=f"{page}-graph", config=GRAPH_CONFIG, style={"height": height},
                      figure=figure),
            dcc.Store(id=f"{page}-box"),
            dcc.Store(id=f"{page}-relayout"),
            dcc.Store(id=f"{page}-query", data=dict(query)),
            html.Div(id=f"{page}-query-mirror", hidden=True)]


def register_zoomable_graph(app: dash.Dash, page: str) -> None:
    """The browser-side half of a zoomable_graph: the URL follows the view, axis-moving
    relayout events reach the server, a click on a point opens its source."""
    mirror_query_clientside(app, page)
    pass_axis_events_clientside(app, page)
    navigate_to_source(app, f"{page}-graph")


def mirror_query_clientside(app: dash.Dash, page: str) -> None:
    """Keep the address bar's query string equal to the store `<page>-query` (a dict)."""
    app.clientside_callback(_MIRROR_JS, Output(f"{page}-query-mirror", "children"),
                            Input(f"{page}-query", "data"))


# Only the relayout events that move an axis pass on to the server, as the ranges the graph
# now shows (with equal aspect, plotly widens one axis of a zoom box; the server queries what
# is visible). Dash drops a callback's pending answer when the callback is triggered again,
# so a resize event right after a zoom (the graph's autosize) would otherwise lose the zoom.
_AXIS_EVENTS_JS = """
function(relayout) {
    const keys = Object.keys(relayout || {});
    if (!keys.some((key) => key.startsWith("xaxis.") || key.startsWith("yaxis."))) {
        return window.dash_clientside.no_update;
    }
    const plot = document.querySelector("#GRAPH .js-plotly-plot");
    if (keys.some((key) => key.endsWith(".autorange")) || !plot || !plot.layout) {
        return relayout;
    }
    return {"xaxis.range": plot.layout.xaxis.range.slice(),
            "yaxis.range": plot.layout.yaxis.range.slice()};
}
"""


def pass_axis_events_clientside(app: dash.Dash, page: str) -> None:
    """Copy the relayout events of `<page>-graph` that move an axis to `<page>-relayout`."""
    app.clientside_callback(_AXIS_EVENTS_JS.replace("GRAPH", f"{page}-graph"),
                            Output(f"{page}-relayout", "data"),
                            Input(f"{page}-graph", "relayoutData"))


def navigate_to_source(app: dash.Dash, graph: str) -> None:
    """A click on a point whose customdata is a source name opens that source's page."""

    @app.callback(Output("url", "pathname", allow_duplicate=True),
                  Output("url", "search", allow_duplicate=True),
                  Input(graph, "clickData"), prevent_initial_call=True)
    def open_source(click: Mapping[str, Any] | None) -> tuple[str, str]:
        points = (click or {}).get("points") or [{}]
        name = points[0].get("customdata")
        if not isinstance(name, str) or not name:
            raise dash.exceptions.PreventUpdate  # a bin or a graticule line
        return source_href(name), ""


def marker_size(points: int) -> int:
    """Marker diameter in pixels for a plot of `points` points: smaller as they crowd (which
    also bounds the drawing work, proportional to the pixels covered)."""
    return 6 if points <= 10_000 else 4 if points <= 30_000 else 3


def typed(values: np.ndarray) -> dict[str, str]:
    """An array as plotly.js's typed-array form (base64 of little-endian float32 or int32,
    with its shape): a tenth of JSON's size and time for numbers; NaN stays a gap."""
    kind = "i4" if np.issubdtype(values.dtype, np.integer) else "f4"
    array = np.ascontiguousarray(values, dtype="<" + kind)
    spec = {"dtype": kind, "bdata": base64.b64encode(array.tobytes()).decode("ascii")}
    if array.ndim > 1:
        spec["shape"] = ", ".join(str(n) for n in array.shape)
    return spec


def view_key(query: Mapping[str, str], box: list[float | None]) -> str:
    """A short text naming the view a figure draws (its filters and box)."""
    return json.dumps({"q": dict(sorted(query.items())),
                       "box": [None if v is None else round(v, 6) for v in box]},
                      separators=(",", ":"))


def control_style() -> dict[str, Any]:
    """Keyword arguments of a RadioItems or Checklist: its options in a row."""
    return {"inline": True, "labelStyle": {"marginRight": "0.6em"}}


def field(label: str, control: Component) -> html.Div:
    """A control with its caption above it."""
    return html.Div([html.Span(label, style={"fontSize": "0.85em"}), control],
                    style={"display": "flex", "flexDirection": "column", "gap": "0.2em"})


def form(fields: list[html.Div]) -> html.Div:
    """A page's controls in one wrapping row."""
    return html.Div(fields, style={"display": "flex", "gap": "1.1em", "alignItems": "end",
                                   "flexWrap": "wrap", "margin": "0.5em 0"})
