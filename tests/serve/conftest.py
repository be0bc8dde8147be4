"""The explorer under test: a small classified warehouse, the app on a live local server, and
headless Chromium pointed at it (screenshots in artifacts/serve/)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from browser import chromium, severe_console_entries
from science_fixtures import classified_copy


@dataclass
class LiveServer:
    """A running explorer: its base URL, the warehouse it reads, and that warehouse's reader
    (the tests' own queries run on it: the file is open in this process)."""

    url: str
    warehouse: Path
    reader: Any  # xpipe.serve.reader.WarehouseReader
    app: Any = None  # the dash.Dash app, where a test needs its callbacks or downloads

    def query(self, sql: str, params: Any = None) -> pl.DataFrame:
        return self.reader.frame(sql, params)

    def get(self, path: str) -> tuple[int, str]:
        """HTTP status and body of a plain GET (no browser), 4xx included."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


NO_ERRORS_WHERE = "hash(name) % 7 = 0"  # sources whose detections get no published limits
SERVE_DRAWS = 20


def draw_uncertainty(warehouse: Path) -> None:
    """`xpipe uncertainty` on the warehouse, with every limit of one source in seven removed
    first (those sources then have no published errors: NULL class stability)."""
    import duckdb
    from click.testing import CliRunner

    from xpipe.cli.main import main
    from xpipe.warehouse.seeds import confidence_limits
    from xpipe.warehouse.sql_models import load_macros, run_models

    with duckdb.connect(str(warehouse)) as con:
        nulls = ", ".join(f"{e.lolim} = NULL, {e.hilim} = NULL"
                          for e in confidence_limits().values())
        con.execute(f"UPDATE raw.detections SET {nulls} WHERE {NO_ERRORS_WHERE}")
        load_macros(con)
        run_models(con, names=["model.stg_detections", "model.detection_limits"])
    result = CliRunner().invoke(main, ["--warehouse", str(warehouse), "uncertainty", "--draws",
                                       str(SERVE_DRAWS), "--seed", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="session")
def serve_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the science tests' small simulated, classified warehouse, after `xpipe
    uncertainty` (some sources without published errors)."""
    warehouse = classified_copy(tmp_path_factory, "serve")
    draw_uncertainty(warehouse)
    return warehouse


def start_server(warehouse: Path, **settings: Any) -> tuple[Any, Any, threading.Thread]:
    """create_app on a free 127.0.0.1 port, served by a background thread."""
    from werkzeug.serving import make_server

    from xpipe.serve.app import create_app
    from xpipe.serve.settings import ServeSettings

    app = create_app(warehouse, ServeSettings(port=0, **{"allow_sql": True, **settings}))
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="xpipe-serve", daemon=True)
    thread.start()
    return app, server, thread


def stop_server(app: Any, server: Any, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    app.server.extensions["xpipe_downloads"].close()
    app.server.extensions["xpipe_reader"].close()


@contextmanager
def served_with_point_limit(live_server: LiveServer, browser: Any, limit: int
                            ) -> Iterator[LiveServer]:
    """The live server's warehouse served again with another point limit; on the way out the
    browser leaves its pages first, so that no request reaches the stopped server."""
    app, server, thread = start_server(live_server.warehouse, max_points=limit)
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", live_server.warehouse,
                         live_server.reader)
    finally:
        browser.get("about:blank")
        severe_console_entries(browser)
        stop_server(app, server, thread)


@pytest.fixture(scope="session")
def live_server(serve_warehouse: Path) -> Iterator[LiveServer]:
    app, server, thread = start_server(serve_warehouse)
    reader = app.server.extensions["xpipe_reader"]
    try:
        yield LiveServer(f"http://127.0.0.1:{server.port}", serve_warehouse, reader, app)
    finally:
        stop_server(app, server, thread)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"), window="1200,800")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
