"""The explorer's pages, in nav-bar order. Each module defines PATH, TITLE, `layout(ctx,
path_rest, query)`, `register_callbacks(app, ctx)` and `validate(ctx, path_rest, query)` (raises
InputError → 400, NotFoundError → 404); its component ids start with the page's name."""

from __future__ import annotations

from xpipe.serve.pages import overview, properties, search, sky, source, sql

PAGES = (overview, sky, properties, source, search, sql)
