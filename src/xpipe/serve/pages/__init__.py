"""The explorer's pages, in nav-bar order. Each module defines PATH, TITLE, `layout(ctx,
path_rest, query)`, `register_callbacks(app, ctx)` and `validate(ctx, path_rest, query)` (raises
InputError → 400, NotFoundError → 404); its component ids start with the page's name."""

from __future__ import annotations

from types import ModuleType

from xpipe.serve.pages import overview, properties, search, sky, source, sql
from xpipe.serve.settings import ServeSettings

PAGES = (overview, sky, properties, source, search, sql)


def nav_pages(settings: ServeSettings) -> list[ModuleType]:
    """The pages in the nav bar: the SQL page only where it is allowed."""
    return [page for page in PAGES if settings.allow_sql or page is not sql]
