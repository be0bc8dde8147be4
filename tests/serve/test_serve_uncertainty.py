"""The explorer and `xpipe uncertainty` (issue 14 §3): the source page shows each detection's
intervals and the class stability; the sky page filters on a minimum stability, with sources
without published errors (NULL) kept, hidden or shown alone — never counted as 0 or 1; without
current results both pages say how to get them."""

from __future__ import annotations

import html
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import assert_no_console_errors, screenshot, wait_for
from plot_pages import drawn_names, fill, pick_radio, search_params, status_text, wait_for_view
from science_fixtures import classified_copy
from selenium.webdriver.support.ui import WebDriverWait
from serve.conftest import SERVE_DRAWS, LiveServer, start_server, stop_server
from test_serve_pages import facts, table_rows

from xpipe.serve.pages.sky import sky_filter
from xpipe.serve.sky_queries import SkyData

GRAPH = "sky-graph"


def stability(server: LiveServer, where: str) -> list[str]:
    return sorted(server.query(
        f"SELECT name FROM results.source_class_stability WHERE {where}")["name"])


@pytest.fixture(scope="module")
def undrawn_server(tmp_path_factory: pytest.TempPathFactory, browser: Any
                   ) -> Iterator[LiveServer]:
    """A classified warehouse without uncertainty results, served."""
    warehouse: Path = classified_copy(tmp_path_factory, "serve-undrawn")
    app, server, thread = start_server(warehouse)
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", warehouse,
                         app.server.extensions["xpipe_reader"])
    finally:
        browser.get("about:blank")
        stop_server(app, server, thread)


def test_sky_stability_filter_keeps_hides_or_shows_alone_the_unknown(live_server, browser
                                                                    ) -> None:
    unknown = stability(live_server, "class_stability IS NULL")
    stable = stability(live_server, "class_stability >= 0.9")
    assert unknown and stable  # the fixture has both
    for query, expected in (("min_stab=0.9&errors=with", stable),
                            ("errors=without", unknown),
                            ("min_stab=0.9", sorted(stable + unknown))):
        browser.get(f"{live_server.url}/sky?{query}")
        wait_for_view(browser, GRAPH)
        assert sorted(drawn_names(browser, GRAPH)) == expected, query
    assert (f"({len(unknown):,} without published errors: class stability unknown)"
            in status_text(browser, "sky"))
    screenshot(browser, "sky-stability")

    before = wait_for_view(browser, GRAPH)
    pick_radio(browser, "sky-errors", "with")  # in the page, mirrored in the URL
    fill(browser, "sky-min-stab", "0.5")
    WebDriverWait(browser, 30).until(
        lambda d: search_params(d) == {"min_stab": "0.5", "errors": "with"})
    wait_for_view(browser, GRAPH, str(before))
    WebDriverWait(browser, 30).until(
        lambda d: sorted(drawn_names(d, GRAPH)) == stability(live_server,
                                                              "class_stability >= 0.5"))
    assert_no_console_errors(browser)

    status, body = live_server.get("/sky?min_stab=1.5")
    assert status == 400 and "min_stab=1.5 is out of range" in html.unescape(body)
    status, body = live_server.get("/sky?errors=maybe")
    assert status == 400 and "errors='maybe' is not one of: any, with, without" in \
        html.unescape(body)


def test_sky_data_stability_counts(live_server) -> None:
    data = SkyData(live_server.reader)
    for query, where in (({"min_stab": "0.6", "errors": "with"}, "class_stability >= 0.6"),
                         ({"errors": "without"}, "class_stability IS NULL"),
                         ({"min_stab": "0.6"},
                          "class_stability IS NULL OR class_stability >= 0.6")):
        view = data.view(sky_filter(query), None, 10**9)
        assert view.classified.total == len(stability(live_server, where)), query
    assert data.view(sky_filter({}), None, 10**9).no_errors == len(
        stability(live_server, "class_stability IS NULL"))


def test_source_page_shows_the_intervals_and_the_stability(live_server, browser) -> None:
    name = live_server.query(
        "SELECT name FROM results.source_class_stability WHERE detections_with_errors >= 2 "
        "ORDER BY detection_count DESC, name LIMIT 1").item()
    stored = live_server.query("""
        SELECT u.obsid, u.det_id, u.pred_class, i.probability, i.lo68, i.hi68, i.lo95, i.hi95,
               u.pred_agreement
        FROM results.detection_class_intervals AS i
        JOIN results.detection_class_uncertainty AS u USING (det_id)
        WHERE i.name = ? AND i.class = u.pred_class ORDER BY u.obsid, u.det_id""", [name])
    row = live_server.query("SELECT * FROM results.source_class_stability WHERE name = ?",
                            [name]).row(0, named=True)
    browser.get(f"{live_server.url}/source/{name.replace(' ', '%20').replace('+', '%2B')}")
    wait_for(browser, "#source-intervals")
    rows = table_rows(browser, "source-intervals")
    assert len(rows) == stored.height
    for shown, expected in zip(rows, stored.iter_rows(named=True), strict=True):
        assert int(shown["det_id"]) == expected["det_id"]
        assert shown["pred_class"] == expected["pred_class"]
        for column in ("probability", "lo68", "hi68", "lo95", "hi95", "pred_agreement"):
            assert math.isclose(float(shown[column]), expected[column], abs_tol=1e-6), column
    fact = facts(browser, "source-facts")["class stability"]
    assert fact.startswith(f"{row['outcome']} holds in {row['class_stability']:.1%} of the "
                           "draws")
    assert f"drawn {SERVE_DRAWS} times" in wait_for(browser, "#source-uncertainty-about").text
    wait_for(browser, "#source-figure .main-svg")
    screenshot(browser, "source-uncertainty")

    unknown = live_server.query("SELECT name FROM results.source_class_stability "
                                "WHERE class_stability IS NULL ORDER BY name LIMIT 1").item()
    browser.get(f"{live_server.url}/source/{unknown.replace(' ', '%20').replace('+', '%2B')}")
    wait_for(browser, "#source-facts")
    assert facts(browser, "source-facts")["class stability"] == (
        "unknown: no published errors (nothing drawn)")
    assert "class stability: none" in wait_for(browser, "#source-stability").text
    assert_no_console_errors(browser)


def test_without_uncertainty_results_the_pages_say_how_to_get_them(undrawn_server, browser
                                                                   ) -> None:
    server = undrawn_server
    browser.get(server.url + "/sky")
    wait_for_view(browser, GRAPH)
    note = wait_for(browser, "#sky-stability-note").text
    assert "class-stability filter off" in note and "run `xpipe uncertainty`" in note
    status, body = server.get("/sky?min_stab=0.5")
    assert status == 400 and "run `xpipe uncertainty`" in html.unescape(body)

    name = server.query("SELECT name FROM results.source_class LIMIT 1").item()
    browser.get(f"{server.url}/source/{name.replace(' ', '%20').replace('+', '%2B')}")
    note = wait_for(browser, "#source-uncertainty-note").text
    assert "run `xpipe uncertainty`" in note
    assert "run `xpipe uncertainty`" in facts(browser, "source-facts")["class stability"]
    assert_no_console_errors(browser)
