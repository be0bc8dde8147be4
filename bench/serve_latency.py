"""Latency of `xpipe serve` as a user sees it: headless Chromium drives every interaction of
every page, each timed from the click (or key) until the page has drawn its answer.

    python bench/serve_latency.py WAREHOUSE|N [WAREHOUSE|N ...] [--repeats 5]

A WAREHOUSE is a classified warehouse file; a number N builds one of N simulated detections
in bench/work/serve/nN/ first (kept there for later runs; BENCH_SIM_CACHE reuses simulated
catalogues as bench/pipeline.py does). The server runs as its own `xpipe serve` process;
startup (to the first answered request, the in-memory tables of the Sky and Properties pages
included) is timed too. Results: bench/results/serve_latency_<detections>.json with every
sample, the median and maximum per interaction, and the target: 1 s up to CSC-2.1 sizes
(1.5 million detections), 2 s above. Needs Debian's chromium and chromium-driver.

"Drawn" means: for a plotly page, the graph shows the figure of the new view (its
layout.meta.view changed) and the browser has painted twice since; for a table, the new table
is in the page and painted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from common import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from browser import chromium  # noqa: E402  (the browser tests' Chromium, one launcher)

WORK = ROOT / "bench" / "work" / "serve"
XPIPE = Path(sys.executable).with_name("xpipe")
TARGETS = ((1_500_000, 1.0), (float("inf"), 2.0))  # up to N detections: seconds
POLL_S = 0.01


def target_seconds(detections: int) -> float:
    return next(seconds for limit, seconds in TARGETS if detections <= limit)


# ---- the warehouse and the server -----------------------------------------------------------

def built_warehouse(n: int) -> Path:
    """A classified warehouse of n simulated detections (built once, then reused)."""
    work = WORK / f"n{n}"
    warehouse = work / "xpipe.duckdb"
    if (work / "classified").exists():
        return warehouse
    work.mkdir(parents=True, exist_ok=True)
    cache = os.environ.get("BENCH_SIM_CACHE")
    sim = Path(cache) / f"n{n}" if cache else work / "sim"
    env = {**os.environ, "XPIPE_WAREHOUSE": str(warehouse), "XPIPE_PROGRESS": "0",
           "XPIPE_TEMP_DIR": str(work / "tmp")}
    if not (sim / "manifest.json").exists():
        subprocess.run([str(XPIPE), "simulate", "--detections", str(n), "--seed", "1",
                        "--out", str(sim)], env=env, check=True)
    for args in (["warehouse", "--source", str(sim / "detections"), "--labels",
                  str(sim / "simbad")], ["classify"]):
        subprocess.run([str(XPIPE), *args], env=env, check=True)
    (work / "classified").touch()
    return warehouse


def warehouse_facts(warehouse: Path) -> dict[str, Any]:
    """Sizes, and a source to search for and open."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        def one(sql: str) -> Any:
            return con.sql(sql).fetchall()[0]

        facts = {
            "detections": one("SELECT count(*) FROM raw.detections")[0],
            "sources": one("SELECT count(DISTINCT name) FROM raw.detections")[0],
            "classified_sources": one("SELECT count(*) FROM results.source_class")[0],
        }
        name, ra, dec = one("SELECT name, ra, dec FROM results.source_class "
                            "WHERE is_unique ORDER BY detection_count DESC, name LIMIT 1")
    return {**facts, "name": name, "ra": ra, "dec": dec}


def start_server(warehouse: Path, log: Path) -> tuple[subprocess.Popen, str, float]:
    """`xpipe serve` on a free port: the process, its URL, seconds to the first answer."""
    start = time.perf_counter()
    env = {**os.environ, "XPIPE_PROGRESS": "0"}
    proc = subprocess.Popen([str(XPIPE), "--warehouse", str(warehouse), "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://[^/ ]+/", line)
    if not match:
        proc.kill()
        sys.exit(f"xpipe serve did not start: {line!r}; see {log}")
    url = match.group(0).rstrip("/")
    while True:
        try:
            with urllib.request.urlopen(url + "/", timeout=30):
                break
        except OSError:
            time.sleep(0.05)
    return proc, url, time.perf_counter() - start


# ---- timing in the browser ------------------------------------------------------------------

class Session:
    """A browser on the explorer, and the samples of each interaction."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver, self.url = driver, url
        self.samples: dict[str, list[float]] = {}

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, ready: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            value = ready()
            if value:
                return value
            time.sleep(POLL_S)
        raise TimeoutError("the page did not draw within the time limit")

    def painted(self) -> None:
        """Return once the browser has painted twice (what was drawn is on screen)."""
        self.driver.execute_async_script(
            "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done))")

    def timed(self, name: str, act: Callable[[], None], ready: Callable[[], Any]) -> float:
        start = time.perf_counter()
        act()
        self.wait(ready)
        self.painted()
        seconds = time.perf_counter() - start
        self.samples.setdefault(name, []).append(seconds)
        return seconds

    # plotly pages
    def view(self, graph: str) -> str | None:
        return self.js(f"const g = document.querySelector('#{graph} .js-plotly-plot');"
                       "return g && g._fullLayout && g.layout.meta ? g.layout.meta.view : null")

    def redraw(self, name: str, graph: str, act: Callable[[], None]) -> float:
        before = self.view(graph)
        return self.timed(name, act, lambda: (v := self.view(graph)) and v != before)

    # elements
    def element(self, element_id: str) -> Any:
        return self.driver.find_element("id", element_id)

    def text(self, element_id: str) -> str:
        return self.js("const e = document.getElementById(arguments[0]);"
                       "return e ? e.innerText : ''", element_id)

    def exists(self, css: str) -> bool:
        return bool(self.js("return document.querySelector(arguments[0]) !== null", css))

    def click(self, element_id: str) -> Callable[[], None]:
        return lambda: self.element(element_id).click()

    def nav(self, page: str) -> Callable[[], None]:
        return self.click(f"nav-{page}")

    def type_text(self, element_id: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.element(element_id)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(text)

    def enter(self, element_id: str) -> Callable[[], None]:
        from selenium.webdriver.common.keys import Keys

        return lambda: self.element(element_id).send_keys(Keys.ENTER)

    def option(self, dropdown: str, label: str) -> Callable[[], None]:
        """Open a dropdown now; the returned action clicks its option `label`."""
        self.element(dropdown).click()
        self.wait(lambda: self._option(label))
        return lambda: self._option(label).click()

    def _option(self, label: str) -> Any:
        for element in self.driver.find_elements("css selector", "[role=option]"):
            if element.text.strip() == label:
                return element
        return None

    def close_menus(self) -> None:
        from selenium.webdriver.common.keys import Keys

        self.driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)

    def pick(self, group: str, value: str) -> Callable[[], None]:
        """Click the radio button or checkbox of `value` in `group`."""
        return lambda: self.driver.find_element(
            "css selector", f"#{group} input[value='{value}']").click()

    def relayout(self, graph: str, update: dict[str, Any]) -> Callable[[], None]:
        return lambda: self.js(
            f"Plotly.relayout(document.querySelector('#{graph} .js-plotly-plot'), arguments[0])",
            update)


# ---- the interactions -----------------------------------------------------------------------

# Each round opens its page from the nav bar (default filters), then changes each control
# away from its default, so every action changes the view.
def sky_rounds(s: Session, facts: dict[str, Any], rounds: int) -> None:
    graph = "sky-graph"
    for i in range(rounds):
        s.timed("overview: open", s.nav("overview"),
                lambda: s.exists("#overview-classes .main-svg"))
        s.timed("sky: open", s.nav("sky"), lambda: s.view(graph))
        s.redraw("sky: votes filter", graph, s.pick("sky-votes", ("unique", "ambiguous")[i % 2]))
        s.redraw("sky: class filter", graph, s.option("sky-class", ("XB", "AGN")[i % 2]))
        s.close_menus()
        s.type_text("sky-min-prob", ("0.7", "0.3")[i % 2])
        s.redraw("sky: minimum probability", graph, s.enter("sky-min-prob"))
        s.type_text("sky-min-det", ("2", "3")[i % 2])
        s.redraw("sky: minimum detections", graph, s.enter("sky-min-det"))
        s.redraw("sky: references layer", graph, s.pick("sky-layers", "references"))
        s.redraw("sky: density layer", graph, s.pick("sky-layers", "density"))
        s.redraw("sky: frame", graph, s.pick("sky-frame", "equatorial"))
        s.redraw("sky: zoom", graph, s.relayout(graph, {"xaxis.range": [-0.8, 0.4],
                                                        "yaxis.range": [-0.4, 0.3]}))
        s.redraw("sky: zoom further", graph, s.relayout(graph, {"xaxis.range": [-0.2, 0.1],
                                                                "yaxis.range": [-0.1, 0.1]}))
        s.redraw("sky: zoom out", graph, s.relayout(graph, {"xaxis.autorange": True,
                                                            "yaxis.autorange": True}))


def property_rounds(s: Session, facts: dict[str, Any], rounds: int) -> None:
    graph = "props-graph"
    for i in range(rounds):
        s.timed("overview: open", s.nav("overview"),
                lambda: s.exists("#overview-classes .main-svg"))
        s.timed("properties: open", s.nav("properties"), lambda: s.view(graph))
        s.redraw("properties: detections/sources", graph,
                 s.pick("props-level", "sources"))
        s.redraw("properties: x axis", graph, s.option("props-x", ("bb_kt", "powlaw_gamma")[i % 2]))
        s.redraw("properties: y axis", graph, s.option("props-y", ("P(QSO)", "var_prob_b")[i % 2]))
        s.redraw("properties: log x", graph, s.pick("props-log", "log_x"))
        s.redraw("properties: colour", graph,
                 s.option("props-colour", ("var_prob_b", "bb_kt")[i % 2]))
        s.redraw("properties: class filter", graph,
                 s.option("props-class", ("QSO", "HMXB")[i % 2]))
        s.close_menus()
        s.redraw("properties: zoom", graph, s.relayout(graph, {"xaxis.range": [0.5, 2.0]}))


def other_rounds(s: Session, facts: dict[str, Any], rounds: int) -> None:
    name, ra, dec = facts["name"], facts["ra"], facts["dec"]
    for i in range(rounds):
        s.timed("search: open", s.nav("search"), lambda: s.exists("#search-name"))
        before = s.text("search-results")
        s.type_text("search-name", name[: 9 + i % 3])
        s.timed("search: by name", s.click("search-by-name"),
                lambda b=before: (t := s.text("search-results")) and t != b)
        before = s.text("search-results")
        s.type_text("search-ra", f"{ra:.5f}")
        s.type_text("search-dec", f"{dec:.5f}")
        s.type_text("search-radius", str((30, 60, 120)[i % 3]))
        s.timed("search: cone", s.click("search-by-cone"),
                lambda b=before: (t := s.text("search-results")) and t != b)
        s.timed("source: open from the search", lambda: s.driver.find_element(
            "css selector", "#search-results a[href^='/source/']").click(),
            lambda: s.exists("#source-figure .main-svg") and s.text("source-name-title"))
        s.timed("sql: open", s.nav("sql"), lambda: s.exists("#sql-query"))
        s.type_text("sql-query", ("SELECT agg_master_class, count(*) FROM "
                                  "results.source_class GROUP BY 1 ORDER BY 1",
                                  "SELECT * FROM results.source_class "
                                  f"ORDER BY detection_count DESC LIMIT {100 + i}")[i % 2])
        before = s.js("const t = document.querySelector('#sql-result [id^=sql-table-]');"
                      "return t ? t.id : ''")
        s.timed("sql: run a query", s.click("sql-run"), lambda b=before: (s.js(
            "const t = document.querySelector('#sql-result [id^=sql-table-]');"
            "return t ? t.id : ''") or b) != b)


def full_loads(s: Session, rounds: int) -> None:
    """A typed URL (the browser's cache warm): the whole app starts, then the page draws."""
    for _ in range(rounds):
        for path, graph in (("/sky", "sky-graph"), ("/properties", "props-graph")):
            s.timed(f"load {path} (typed URL)", lambda p=path: s.driver.get(s.url + p),
                    lambda g=graph: s.view(g))


# ---- one warehouse --------------------------------------------------------------------------

def bench_warehouse(warehouse: Path, rounds: int) -> dict[str, Any]:
    facts = warehouse_facts(warehouse)
    target = target_seconds(facts["detections"])
    print(f"{warehouse}: {facts['detections']:,} detections, {facts['sources']:,} sources, "
          f"{facts['classified_sources']:,} classified; target {target:g} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, startup = start_server(warehouse, Path(tmp) / "serve.log")
        print(f"  server up in {startup:.1f} s", flush=True)
        driver = chromium(Path(tmp) / "profile", window="1400,1000")
        try:
            driver.set_page_load_timeout(120)
            driver.set_script_timeout(60)
            driver.get(url + "/")  # the first load fills the browser's cache
            s = Session(driver, url)
            s.wait(lambda: s.exists("#overview-classes .main-svg"))
            full_loads(s, rounds)
            for part in (sky_rounds, property_rounds, other_rounds):
                driver.get(url + "/")
                s.wait(lambda: s.exists("#overview-classes .main-svg"))
                part(s, facts, rounds)
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        finally:
            driver.quit()
            proc.terminate()
            proc.wait(timeout=30)
    interactions = {
        name: {"n": len(v), "median_s": statistics.median(v), "max_s": max(v),
               "within_target": max(v) <= target, "samples_s": [round(x, 4) for x in v]}
        for name, v in s.samples.items()}
    slowest = max(interactions.items(), key=lambda kv: kv[1]["max_s"])
    for name, r in interactions.items():
        print(f"  {name:40s} median {r['median_s']:.3f} s  max {r['max_s']:.3f} s"
              f"{'' if r['within_target'] else '  OVER TARGET'}", flush=True)
    return {"warehouse": str(warehouse), **{k: v for k, v in facts.items()
                                             if k not in ("name", "ra", "dec")},
            "startup_s": startup, "rounds": rounds, "target_s": target,
            "all_within_target": all(r["within_target"] for r in interactions.values()),
            "slowest": {"interaction": slowest[0], "max_s": slowest[1]["max_s"]},
            "console_errors": errors, "interactions": interactions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("warehouses", nargs="+", help="a classified warehouse file, or N to "
                        "build one of N simulated detections")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of every interaction")
    args = parser.parse_args()
    for item in args.warehouses:
        warehouse = Path(item) if not item.isdigit() else built_warehouse(int(item))
        if not warehouse.exists():
            sys.exit(f"no warehouse at {warehouse}")
        result = bench_warehouse(warehouse, args.repeats)
        path = write_result(f"serve_latency_{result['detections']}", result)
        print(f"{path}: slowest {result['slowest']['interaction']} "
              f"{result['slowest']['max_s']:.2f} s (target {result['target_s']:g} s)",
              flush=True)


if __name__ == "__main__":
    main()
