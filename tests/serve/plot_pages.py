"""Driving the explorer's plotly pages in Chromium: wait for a view to be drawn, read the
figure's data from the DOM, zoom, click a point, pick a dropdown option."""

from __future__ import annotations

import json
from typing import Any

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def plot(graph: str) -> str:
    """JS for the plotly div of a dcc.Graph."""
    return f"document.querySelector('#{graph} .js-plotly-plot')"


def view_key(driver: Any, graph: str) -> str | None:
    """The key of the view the graph has drawn (layout.meta.view), once plotly has drawn."""
    return driver.execute_script(
        f"const g = {plot(graph)}; return g && g._fullLayout && g.layout.meta "
        "? g.layout.meta.view : null")


def wait_for_view(driver: Any, graph: str, previous: str | None = None,
                  timeout: float = 30) -> dict[str, Any]:
    """Wait until the graph draws a view other than `previous`; that view's filters and box."""
    WebDriverWait(driver, timeout).until(
        lambda d: bool(key := view_key(d, graph)) and key != previous)
    return json.loads(view_key(driver, graph) or "{}")


def current_key(driver: Any, graph: str) -> str | None:
    return view_key(driver, graph)


def traces(driver: Any, graph: str) -> list[dict[str, Any]]:
    """The drawn traces (plotly's full data: typed arrays decoded): type, name, names
    (customdata), colour, symbol, outline width, hover template, heatmap counts (customdata
    summed)."""
    return driver.execute_script(f"""
        const g = {plot(graph)};
        const list = (v) => (v && typeof v === 'object' && v.length !== undefined)
            ? Array.from(v) : v;
        return g._fullData.map((t) => {{
            const names = (t.type === 'scattergl' && Array.isArray(t.customdata))
                ? t.customdata.filter((v) => typeof v === 'string') : [];
            let binned = 0;
            if (t.type === 'heatmap' && Array.isArray(t.customdata)) {{
                for (const row of t.customdata) for (const v of row) binned += v || 0;
            }}
            return {{type: t.type, name: t.name, names: names, binned: binned,
                     colour: t.marker ? list(t.marker.color) : null,
                     symbol: t.marker ? t.marker.symbol : null,
                     outline: t.marker && t.marker.line ? t.marker.line.width : 0,
                     hover: t.hovertemplate || ''}};
        }});""")


def drawn_names(driver: Any, graph: str) -> list[str]:
    return [name for trace in traces(driver, graph) for name in trace["names"]]


def relayout(driver: Any, graph: str, update: dict[str, Any]) -> None:
    """What a zoom (or a double-click, with autorange) does to the graph."""
    driver.execute_script(f"Plotly.relayout({plot(graph)}, arguments[0])", update)


def drag_zoom(driver: Any, graph: str, start: tuple[float, float], end: tuple[float, float]
              ) -> None:
    """A real mouse drag across the plot area, from and to fractions of its width and height."""
    area = driver.find_element(By.CSS_SELECTOR, f"#{graph} .nsewdrag")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", area)
    box = area.rect
    (x0, y0), (x1, y1) = ((box["width"] * (fx - 0.5), box["height"] * (fy - 0.5))
                          for fx, fy in (start, end))
    ActionChains(driver).move_to_element_with_offset(area, int(x0), int(y0)).click_and_hold() \
        .move_by_offset(int((x1 - x0) / 2), int((y1 - y0) / 2)) \
        .move_by_offset(int((x1 - x0) / 2), int((y1 - y0) / 2)).release().perform()


def click_isolated_point(driver: Any, graph: str, min_pixels: float = 12.0) -> str:
    """Click a drawn point with no other point within `min_pixels`; its source name."""
    found = driver.execute_script(f"""
        const g = {plot(graph)}, fl = g._fullLayout;
        g.scrollIntoView({{block: 'center'}});
        const area = g.querySelector('.nsewdrag').getBoundingClientRect();
        const pts = [];
        g._fullData.forEach((t) => {{
            if (t.type !== 'scattergl' || !Array.isArray(t.customdata)) return;
            for (let i = 0; i < t.x.length; i++) {{
                if (t.x[i] === null) continue;
                pts.push([area.left + fl.xaxis.l2p(t.x[i]), area.top + fl.yaxis.l2p(t.y[i]),
                          t.customdata[i]]);
            }}
        }});
        const inside = pts.filter((p) => p[0] > area.left + 20 && p[0] < area.right - 20
                                        && p[1] > area.top + 20 && p[1] < area.bottom - 20);
        for (const p of inside) {{
            if (pts.every((q) => q === p || Math.hypot(q[0] - p[0], q[1] - p[1]) > {min_pixels}))
                return p;
        }}
        return null;""")
    assert found, "no isolated point to click"
    x, y, name = found
    action = ActionBuilder(driver)
    action.pointer_action.move_to_location(round(x), round(y))
    action.pointer_action.pause(0.3)
    action.pointer_action.click()
    action.perform()
    return name


def choose(driver: Any, dropdown: str, option: str) -> None:
    """Pick `option` in a Dash dropdown (open it, click the option)."""
    driver.find_element(By.ID, dropdown).click()
    WebDriverWait(driver, 10).until(
        lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "[role=option]")
                   if e.text.strip() == option])
    for element in driver.find_elements(By.CSS_SELECTOR, "[role=option]"):
        if element.text.strip() == option:
            element.click()
            return


def fill(driver: Any, field: str, text: str) -> None:
    """Type into an input as a user would, then Enter (clear() does not reach React)."""
    box = driver.find_element(By.ID, field)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text + Keys.ENTER)


def pick_radio(driver: Any, group: str, value: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{group} input[value='{value}']").click()


def status_text(driver: Any, page: str) -> str:
    return driver.find_element(By.ID, f"{page}-status").text


def search_params(driver: Any) -> dict[str, str]:
    """The address bar's query string."""
    return driver.execute_script(
        "return Object.fromEntries(new URLSearchParams(window.location.search))")
