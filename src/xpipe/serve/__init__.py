"""`xpipe serve`: a read-only web explorer of a classified warehouse (Dash on Flask).

`app.create_app` builds the app: one layout (a nav bar, the URL and the page), a router that
asks the page module listed in `pages.PAGES` for its layout, and a Flask hook that answers a
bad URL with an HTTP 4xx before Dash serves anything. Every query runs on a cursor of one
read-only, configuration-locked DuckDB connection (`reader.WarehouseReader`).
"""
