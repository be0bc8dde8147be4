"""Placeholder until h13-plots' properties page is merged (that branch owns this file)."""

from __future__ import annotations

from collections.abc import Mapping

import dash
from dash import html
from dash.development.base_component import Component

from xpipe.serve.context import PageContext
from xpipe.serve.routing import require_no_subpath

PATH = "/properties"
TITLE = "Properties"


def validate(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> None:
    require_no_subpath(PATH, path_rest)


def layout(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> Component:
    return html.Div([html.H1(TITLE), html.P("Not built yet.")])


def register_callbacks(app: dash.Dash, ctx: PageContext) -> None:
    return None
