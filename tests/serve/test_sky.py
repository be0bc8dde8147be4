"""The Sky page in headless Chromium: what it draws is what results.* holds, its filters and
layers, binned counts that turn into points on zoom, and a click that opens the source."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import numpy as np
import polars as pl
import pytest
from browser import assert_no_console_errors, screenshot, wait_for
from plot_pages import (
    click_isolated_point,
    drag_zoom,
    drawn_names,
    fill,
    pick_radio,
    relayout,
    search_params,
    status_text,
    traces,
    view_key,
    wait_for_view,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from serve.conftest import LiveServer, served_with_point_limit
from sky_reference import map_xy

from xpipe.serve import palette

GRAPH = "sky-graph"


def _classified(server: LiveServer, where: str = "TRUE") -> pl.DataFrame:
    return server.query(f"""
        SELECT s.*, p.mean_probability AS master_probability
        FROM results.source_class AS s
        JOIN results.source_class_probs AS p ON p.name = s.name AND p.class = s.soft_class
        WHERE {where}""")


@pytest.fixture(scope="module")
def crowded(live_server: LiveServer, browser: Any) -> Iterator[tuple[LiveServer, int]]:
    """The same warehouse served with a point limit a quarter of its classified sources."""
    limit = _classified(live_server).height // 4
    with served_with_point_limit(live_server, browser, limit) as server:
        yield server, limit


def test_sky_draws_the_classified_sources_and_filters_them(live_server, browser) -> None:
    browser.get(live_server.url + "/sky")
    wait_for_view(browser, GRAPH)
    expected = _classified(live_server)
    drawn = traces(browser, GRAPH)
    names = [n for t in drawn for n in t["names"]]
    assert sorted(names) == sorted(expected["name"])
    unique = expected.filter(pl.col("is_unique"))
    for agg, group in unique.group_by("agg_master_class"):
        trace = next(t for t in drawn if t["name"].startswith(f"{agg[0]} ("))
        assert sorted(trace["names"]) == sorted(group["name"])
        assert trace["colour"] == palette.agg_colour(agg[0])
    grey = next(t for t in drawn if t["name"].startswith("ambiguous ("))
    assert len(grey["names"]) == expected.height - unique.height
    assert grey["colour"] == palette.NO_CLASS
    assert f"{expected.height:,} classified sources in view" in status_text(browser, "sky")
    screenshot(browser, "sky")

    before = view_key(browser, GRAPH)
    pick_radio(browser, "sky-votes", "unique")  # a filter in the page ...
    wait_for_view(browser, GRAPH, before)
    assert sorted(drawn_names(browser, GRAPH)) == sorted(unique["name"])
    assert search_params(browser) == {"votes": "unique"}  # ... mirrored in the URL

    before = view_key(browser, GRAPH)
    fill(browser, "sky-min-prob", "1.5")  # a bad value: its message, the view stays
    error = wait_for(browser, "#sky-error-text").text
    assert "min_prob=1.5 is out of range: expected a number from 0 to 1" in error
    assert view_key(browser, GRAPH) == before
    fill(browser, "sky-min-prob", "0.5")
    wait_for_view(browser, GRAPH, before)
    assert browser.find_elements(By.ID, "sky-error-text") == []
    assert search_params(browser) == {"votes": "unique", "min_prob": "0.5"}

    browser.get(live_server.url + "/sky?class=XB,YSO&votes=all&min_prob=0.5&min_det=2"
                "&frame=equatorial")  # a shared view
    view = wait_for_view(browser, GRAPH)
    assert view["q"] == {"class": "XB,YSO", "frame": "equatorial", "min_det": "2",
                         "min_prob": "0.5"}
    chosen = expected.filter((pl.col("master_probability") >= 0.5)
                             & (pl.col("detection_count") >= 2))
    agg = dict(live_server.query("SELECT class, agg_class FROM model.classes").iter_rows())
    chosen = chosen.filter(pl.col("hard_class").replace_strict(agg).is_in(["XB", "YSO"])
                           | pl.col("soft_class").replace_strict(agg).is_in(["XB", "YSO"]))
    assert sorted(drawn_names(browser, GRAPH)) == sorted(chosen["name"])
    assert chosen.height > 0
    assert_no_console_errors(browser)


def test_sky_layers_and_bad_parameters(live_server, browser) -> None:
    browser.get(live_server.url + "/sky?references=1&density=1")
    wait_for_view(browser, GRAPH)
    drawn = traces(browser, GRAPH)
    references = live_server.query(
        "SELECT name FROM model.source_labels WHERE role = 'reference'")["name"]
    shown = [n for t in drawn if t["name"].startswith("SIMBAD references") for n in t["names"]]
    assert sorted(shown) == sorted(references)
    density = next(t for t in drawn if t["name"] == "all detected sources")
    sources = live_server.query("SELECT count(DISTINCT name) AS n FROM raw.detections")["n"][0]
    assert density["type"] == "heatmap" and density["binned"] == sources
    assert f"{sources:,} detected sources in view" in status_text(browser, "sky")
    assert_no_console_errors(browser)

    status, body = live_server.get("/sky?min_prob=high")
    assert status == 400 and "min_prob='high' is not a number" in html.unescape(body)
    assert "Traceback" not in body
    status, body = live_server.get("/sky?class=Quasar")
    assert status == 400 and "unknown value(s) 'Quasar'" in html.unescape(body)


def test_sky_zoom_turns_bins_into_points_and_a_click_opens_the_source(crowded, browser
                                                                      ) -> None:
    server, limit = crowded
    browser.get(server.url + "/sky")
    wait_for_view(browser, GRAPH)
    sources = _classified(server)
    heatmap = next(t for t in traces(browser, GRAPH) if t["type"] == "heatmap")
    assert heatmap["binned"] == sources.height > limit  # every source counted, in bins
    assert "shown binned" in status_text(browser, "sky")
    assert drawn_names(browser, GRAPH) == []

    before = view_key(browser, GRAPH)
    drag_zoom(browser, GRAPH, (0.45, 0.4), (0.6, 0.6))  # a real zoom box drag
    view = wait_for_view(browser, GRAPH, before)
    x0, x1, y0, y1 = view["box"]
    assert 0 < x1 - x0 < 3.0  # narrower than the whole sky

    # a box holding fewer sources than the limit: they are drawn one by one
    x, y = map_xy(sources["ra"].to_numpy(), sources["dec"].to_numpy(), "galactic")
    centre = np.argsort(np.hypot(x, y))[limit // 2]  # a box around the central sources
    half = np.sort(np.maximum(np.abs(x - x[centre]), np.abs(y - y[centre])))[limit // 2]
    box = [x[centre] - half, x[centre] + half, y[centre] - half, y[centre] + half]
    before = view_key(browser, GRAPH)
    relayout(browser, GRAPH, {"xaxis.range": box[:2], "yaxis.range": box[2:]})
    view = wait_for_view(browser, GRAPH, before)
    x0, x1, y0, y1 = view["box"]
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    assert 0 < inside.sum() <= limit
    assert sorted(drawn_names(browser, GRAPH)) == sorted(sources["name"].filter(inside))
    assert f"{inside.sum():,} classified sources in view, drawn one by one" in status_text(
        browser, "sky")
    screenshot(browser, "sky-zoomed")

    before = view_key(browser, GRAPH)
    relayout(browser, GRAPH, {"xaxis.autorange": True, "yaxis.autorange": True})
    assert wait_for_view(browser, GRAPH, before)["box"] == [-3.0, 3.0, -1.5, 1.5]

    relayout(browser, GRAPH, {"xaxis.range": box[:2], "yaxis.range": box[2:]})
    wait_for_view(browser, GRAPH, view_key(browser, GRAPH))
    name = click_isolated_point(browser, GRAPH)
    WebDriverWait(browser, 20).until(lambda d: "/source/" in d.current_url)
    assert unquote(browser.current_url.split("/source/", 1)[1]) == name
    browser.back()
    WebDriverWait(browser, 20).until(lambda d: d.current_url.endswith("/sky"))
    wait_for_view(browser, GRAPH)
    assert_no_console_errors(browser)

