"""The Properties page in headless Chromium: the points are the references and classified
targets of the warehouse, axes and levels switch, log axes say what they drop, the class filter
and colour work, a crowded view is a stated subsample that fills in on zoom."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
from browser import assert_no_console_errors, screenshot
from plot_pages import (
    choose,
    drawn_names,
    pick_radio,
    relayout,
    search_params,
    status_text,
    traces,
    view_key,
    wait_for_view,
)
from serve.conftest import LiveServer, served_with_point_limit

GRAPH = "props-graph"
ROWS = """
    SELECT f.*, r.role AS kind, c.pred_class,
           CASE WHEN r.role = 'reference' THEN r.label_class ELSE c.pred_class END AS class
    FROM model.detection_features AS f
    JOIN model.detection_roles AS r USING (det_id)
    LEFT JOIN results.detection_class AS c USING (det_id)
    WHERE r.role = 'reference' OR c.pred_class IS NOT NULL"""


@pytest.fixture(scope="module")
def rows(live_server: LiveServer) -> pl.DataFrame:
    return live_server.query(ROWS)


@pytest.fixture(scope="module")
def crowded(live_server: LiveServer, browser: Any, rows: pl.DataFrame
            ) -> Iterator[tuple[LiveServer, int]]:
    """The same warehouse served with a point limit a fifth of the detections shown."""
    limit = rows.height // 5
    with served_with_point_limit(live_server, browser, limit) as server:
        yield server, limit


def test_properties_draws_references_and_targets(live_server, browser, rows) -> None:
    browser.get(live_server.url + "/properties")
    wait_for_view(browser, GRAPH)
    drawn = traces(browser, GRAPH)
    assert sorted(n for t in drawn for n in t["names"]) == sorted(rows["name"])
    outlined = [n for t in drawn if t["outline"] > 0 for n in t["names"]]
    plain = [n for t in drawn if t["outline"] == 0 for n in t["names"]]
    references = rows.filter(pl.col("kind") == "reference")
    assert sorted(outlined) == sorted(references["name"])  # references and targets are
    assert len(plain) == rows.height - references.height  # told apart by their markers
    assert all("SIMBAD reference" in t["hover"] for t in drawn if t["outline"] and t["names"])
    qso = [n for t in drawn if t["name"].startswith("QSO (") for n in t["names"]]
    assert len(qso) == rows.filter(pl.col("class") == "QSO").height
    assert f"all {rows.height:,} in view are drawn" in status_text(browser, "props")
    screenshot(browser, "properties")

    before = view_key(browser, GRAPH)
    pick_radio(browser, "props-level", "sources")  # sources: one point each
    wait_for_view(browser, GRAPH, before)
    assert sorted(drawn_names(browser, GRAPH)) == sorted(rows["name"].unique())
    assert search_params(browser) == {"level": "sources"}

    before = view_key(browser, GRAPH)
    choose(browser, "props-x", "bb_kt")  # another feature on x
    view = wait_for_view(browser, GRAPH, before)
    assert view["q"] == {"level": "sources", "x": "bb_kt"}
    axis = browser.execute_script(
        "return document.querySelector('#props-graph .js-plotly-plot').layout.xaxis.title.text")
    assert axis == "bb_kt"
    assert_no_console_errors(browser)


def test_log_axes_class_filter_and_colour(live_server, browser, rows) -> None:
    browser.get(live_server.url + "/properties?x=powlaw_gamma&y=var_ratio_b&log_x=1&log_y=1")
    wait_for_view(browser, GRAPH)
    dropped = rows.filter((pl.col("powlaw_gamma") <= 0) | (pl.col("var_ratio_b") <= 0)).height
    assert dropped > 0
    assert f"{dropped:,} excluded by the log scale (value ≤ 0)" in status_text(browser, "props")
    assert len(drawn_names(browser, GRAPH)) == rows.height - dropped
    types = browser.execute_script(
        "const l = document.querySelector('#props-graph .js-plotly-plot').layout;"
        "return [l.xaxis.type, l.yaxis.type]")
    assert types == ["log", "log"]

    browser.get(live_server.url + "/properties?class=QSO,HMXB&kind=target&colour=var_prob_b"
                "&y=p_QSO")
    wait_for_view(browser, GRAPH)
    chosen = rows.filter(pl.col("pred_class").is_in(["QSO", "HMXB"])
                         & (pl.col("kind") == "target"))
    drawn = traces(browser, GRAPH)
    assert sorted(n for t in drawn for n in t["names"]) == sorted(chosen["name"])
    coloured = next(t for t in drawn if t["name"].startswith("classified targets ("))
    assert sorted(coloured["colour"]) == pytest.approx(sorted(chosen["var_prob_b"]), abs=1e-6)
    assert_no_console_errors(browser)

    for query, words in [("x=flux", "x='flux' is not one of"),
                         ("class=Star", "unknown value(s) 'Star'"),
                         ("log_x=yes", "log_x='yes' is not one of: 1, 0")]:
        status, body = live_server.get("/properties?" + query)
        assert status == 400 and words in html.unescape(body), (query, body[-400:])
        assert "Traceback" not in body


def test_a_crowded_view_is_a_subsample_that_fills_in_on_zoom(crowded, browser, rows) -> None:
    server, limit = crowded
    browser.get(server.url + "/properties")
    wait_for_view(browser, GRAPH)
    full = drawn_names(browser, GRAPH)
    assert len(full) == limit
    assert (f"a uniform subsample of {limit:,} of the {rows.height:,} in view is drawn"
            in status_text(browser, "props"))
    box = (-0.6, 0.2, -0.5, 0.3)
    inside = rows.filter(pl.col("hard_ms").is_between(box[0], box[1])
                         & pl.col("hard_hm").is_between(box[2], box[3]))
    assert inside.height > 0
    before = view_key(browser, GRAPH)
    relayout(browser, GRAPH, {"xaxis.range": list(box[:2]), "yaxis.range": list(box[2:])})
    view = wait_for_view(browser, GRAPH, before)
    assert view["box"] == pytest.approx(list(box))
    zoomed = drawn_names(browser, GRAPH)
    assert len(zoomed) == min(limit, inside.height)
    assert set(zoomed) <= set(inside["name"])
    text = status_text(browser, "props")
    assert f"{inside.height:,} in view" in text
    assert_no_console_errors(browser)
