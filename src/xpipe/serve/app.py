"""The Dash app: one shell (nav bar, URL, page), a router, and HTTP 4xx for bad URLs.

A URL typed or shared is checked twice by the page's own `validate`: by a Flask hook before
Dash serves its index (a bad one gets a 404 or 400 with a short HTML page that states the
message), and by the router when the browser navigates inside the app (the same message, in
the page). A failing callback shows its message in the shell's message box; nothing a
browser receives ever holds a traceback (those go to the server's log).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dash
import flask
from dash import Input, Output, dcc, html

from xpipe.core.errors import NotFoundError, XpipeError
from xpipe.serve import ui
from xpipe.serve.context import PageContext
from xpipe.serve.downloads import PREFIX as DOWNLOAD_PREFIX
from xpipe.serve.downloads import DownloadStore, send
from xpipe.serve.pages import PAGES, nav_pages
from xpipe.serve.plots import SKIP_SAME_SIZE_RESIZE_JS
from xpipe.serve.reader import WarehouseReader
from xpipe.serve.routing import parse_query, resolve
from xpipe.serve.settings import ServeSettings

log = logging.getLogger(__name__)

DASH_PREFIXES = ("/_dash-", "/_reload-hash", "/_favicon", "/assets/", "/_alive",
                 DOWNLOAD_PREFIX)
INTERNAL_ERROR = "internal error while answering this request; the server's log has the details"


def create_app(warehouse: Path, settings: ServeSettings) -> dash.Dash:
    """The explorer of `warehouse` (classified; opened read-only until the process ends)."""
    downloads = DownloadStore(max_pending=settings.download_max_pending,
                              max_bytes=settings.download_max_bytes,
                              expiry_s=settings.download_expiry_s)
    ctx = PageContext(WarehouseReader(warehouse), settings, downloads)
    app = dash.Dash(__name__, title="xpipe", update_title="", serve_locally=True,
                    suppress_callback_exceptions=True, on_error=_callback_failed,
                    external_scripts=[], external_stylesheets=[])
    app.scripts.config.serve_locally = True
    app.css.config.serve_locally = True
    # Dash's debug tools off, explicitly: no error overlay with tracebacks in the browser, no
    # hot reload, and no version check (it would fetch from plotly's server).
    app.enable_dev_tools(debug=False, dev_tools_ui=False, dev_tools_props_check=False,
                         dev_tools_serve_dev_bundles=False, dev_tools_hot_reload=False,
                         dev_tools_silence_routes_logging=True,
                         dev_tools_disable_version_check=True, dev_tools_prune_errors=True)
    app.index_string = app.index_string.replace(
        "{%css%}", "{%css%}<style>" + ui.STYLE + "</style>").replace(
        "{%scripts%}", "<script>" + SKIP_SAME_SIZE_RESIZE_JS + "</script>{%scripts%}<script>"
        + ui.NAVIGATE + "</script>")
    app.layout = shell(ctx)
    _register_router(app, ctx)
    for page in PAGES:
        page.register_callbacks(app, ctx)
    server: flask.Flask = app.server
    server.before_request(lambda: check_url(ctx) or check_callback_request(app))
    server.register_error_handler(500, _server_error)
    server.add_url_rule(DOWNLOAD_PREFIX + "<path:token>", "xpipe_download",
                        lambda token: send_download(ctx, token))
    server.extensions["xpipe_reader"] = ctx.reader  # the CLI closes both on the way out
    server.extensions["xpipe_downloads"] = downloads
    return app


def shell(ctx: PageContext) -> html.Div:
    links = [dcc.Link("xpipe", href="/", className="xp-brand")]
    links += [dcc.Link(page.TITLE, href=page.PATH, id=f"nav-{page.__name__.rsplit('.', 1)[-1]}")
              for page in nav_pages(ctx.settings)]
    return html.Div([
        dcc.Location(id="url", refresh=False),
        html.Nav(links, className="xp-nav"),
        html.Main([html.Div(id=ui.ERROR_ID), html.Div(id="page")], className="xp-main"),
    ])


def render(ctx: PageContext, pathname: str | None, search: str | None) -> Any:
    """The layout of the page at this URL, or the message saying why there is none."""
    try:
        page, rest = resolve(PAGES, pathname or "/")
        query = parse_query(search or "")
        page.validate(ctx, rest, query)
        return page.layout(ctx, rest, query)
    except XpipeError as exc:
        return ui.message(str(exc), id="page-error")


def _register_router(app: dash.Dash, ctx: PageContext) -> None:
    @app.callback(Output("page", "children"), Output(ui.ERROR_ID, "children"),
                  Input("url", "pathname"), Input("url", "search"))
    def route(pathname: str | None, search: str | None) -> tuple[Any, None]:
        return render(ctx, pathname, search), None


def check_url(ctx: PageContext) -> flask.Response | None:
    """Flask's before_request: a full-page GET of a bad URL gets its 4xx and message here;
    Dash's own routes and good URLs pass on to Dash."""
    request = flask.request
    if request.method != "GET" or request.path.startswith(DASH_PREFIXES):
        return None
    try:
        page, rest = resolve(PAGES, request.path)
        query = parse_query(request.query_string.decode("utf-8", errors="replace"))
        page.validate(ctx, rest, query)
    except NotFoundError as exc:
        return _error_response(404, str(exc))
    except XpipeError as exc:
        return _error_response(400, str(exc))
    return None


def send_download(ctx: PageContext, token: str) -> flask.Response:
    """GET /download/<token>: the SQL page's file, streamed from disk once."""
    pending = ctx.downloads.take(token)
    if pending is None:
        return _error_response(404, (
            "no such download: a link works once and for "
            f"{ctx.settings.download_expiry_s:g} s; run the download again from the SQL page"))
    return send(pending)


def check_callback_request(app: dash.Dash) -> flask.Response | None:
    """Flask's before_request for Dash's JSON endpoint: a body that is not a request for one
    of the app's callbacks gets a 400 (Dash itself would fail with a 500)."""
    request = flask.request
    if request.method != "POST" or request.path != "/_dash-update-component":
        return None
    body = request.get_json(silent=True)
    if (not isinstance(body, dict) or body.get("output") not in app.callback_map
            or not isinstance(body.get("inputs"), list)
            or not isinstance(body.get("state", []), list)):
        return _error_response(400, "not a request for one of this app's callbacks")
    return None


def _error_response(status: int, text: str) -> flask.Response:
    return flask.Response(ui.error_page(status, text), status=status,
                          content_type="text/html; charset=utf-8")


def _server_error(exc: Exception) -> flask.Response:
    """Flask has logged the traceback; the browser gets the message only."""
    if flask.request.path.startswith("/_dash-component-suites/"):
        return _error_response(404, "no such script or style in the installed Dash")
    return _error_response(500, INTERNAL_ERROR)


def _callback_failed(exc: Exception) -> None:
    """Dash's handler for an exception in any callback: the message in the shell's box (an
    XpipeError's own words; anything else is a bug, logged with its traceback)."""
    if isinstance(exc, XpipeError):
        text = str(exc)
    else:
        log.error("callback failed", exc_info=exc)
        text = INTERNAL_ERROR
    dash.set_props(ui.ERROR_ID, {"children": ui.message(text)})
