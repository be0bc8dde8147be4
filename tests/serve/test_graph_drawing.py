"""How the explorer's graphs are drawn in Chromium: one draw per view (no second draw of the
same size after Dash's resize), a real change of size still redrawn, and WebGL canvases at the
screen's pixel ratio."""

from __future__ import annotations

import time
from typing import Any

import pytest
from browser import assert_no_console_errors
from plot_pages import plot, wait_for_view
from selenium.webdriver.support.ui import WebDriverWait

COUNT_DRAWS = ("const g = {plot}; window.__xpDraws = 0;"
               "g.on('plotly_afterplot', () => {{ window.__xpDraws += 1; }});")


def _draws_after(browser: Any, graph: str, action: str, settle_s: float = 0.6) -> int:
    """How many times plotly redraws the graph in `settle_s` after the JS `action`."""
    browser.execute_script(COUNT_DRAWS.format(plot=plot(graph)))
    browser.execute_script(action)
    time.sleep(settle_s)
    return browser.execute_script("return window.__xpDraws")


def _width(browser: Any, graph: str) -> float:
    return browser.execute_script(f"return {plot(graph)}._fullLayout.width")


@pytest.mark.parametrize(("path", "graph"), [("/sky", "sky-graph"),
                                             ("/properties", "props-graph")])
def test_a_resize_without_a_change_of_size_does_not_redraw(live_server, browser, path, graph
                                                           ) -> None:
    browser.get(live_server.url + path)
    wait_for_view(browser, graph)
    resize = f"Plotly.Plots.resize({plot(graph)})"
    # what dcc.Graph does after each first draw and on each resize event of its box
    assert _draws_after(browser, graph, resize) == 0
    # a real change of size is still drawn, at the new width
    before = _width(browser, graph)
    size = browser.get_window_size()
    try:
        browser.set_window_size(size["width"] - 200, size["height"])
        WebDriverWait(browser, 10).until(lambda d: _width(d, graph) < before - 100)
        box = browser.execute_script(
            f"return parseFloat(getComputedStyle({plot(graph)}).width)")
        assert _width(browser, graph) == pytest.approx(box, abs=1)
    finally:
        browser.set_window_size(size["width"], size["height"])
    assert_no_console_errors(browser)


def test_webgl_is_drawn_at_the_screen_pixel_ratio(live_server, browser) -> None:
    browser.get(live_server.url + "/sky")
    wait_for_view(browser, "sky-graph")
    ratio, canvas_width, css_width = browser.execute_script(
        "const c = document.querySelector('#sky-graph canvas.gl-canvas-context');"
        "return [window.devicePixelRatio, c.width, c.getBoundingClientRect().width]")
    assert canvas_width == pytest.approx(css_width * ratio, abs=1)
