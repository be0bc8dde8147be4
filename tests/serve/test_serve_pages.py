"""The explorer's pages against the warehouse: what the browser shows is what results.* hold."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import polars as pl
import pytest
from browser import assert_no_console_errors, screenshot, wait_for, wait_text
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

PROBS = ["QSO", "AGN", "Seyfert_1", "Seyfert_2", "HMXB", "LMXB", "XB", "YSO", "TTau*",
         "Orion_V*"]


def table_rows(browser, table_id: str) -> list[dict[str, str]]:
    """The rows of an HTML table as {header: cell text} (one script call, not one per cell)."""
    return browser.execute_script("""
        const table = document.getElementById(arguments[0]);
        const head = Array.from(table.querySelectorAll('thead th')).map(th => th.innerText);
        return Array.from(table.querySelectorAll('tbody tr')).map(tr => Object.fromEntries(
            Array.from(tr.querySelectorAll('td')).map((td, i) => [head[i], td.innerText])));
    """, table_id)


def facts(browser, table_id: str) -> dict[str, str]:
    """A two-column facts table as {label: value}."""
    return browser.execute_script("""
        return Object.fromEntries(Array.from(
            document.querySelectorAll('#' + arguments[0] + ' tr')).map(
                tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText)));
    """, table_id)


def fill(browser, field_id: str, value: str) -> None:
    """Replace an input's text as a user would (clear() does not reach React's state)."""
    box = wait_for(browser, f"#{field_id}")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    if value:
        box.send_keys(value)


@pytest.fixture(scope="module")
def known(live_server) -> dict:
    """A uniquely classified source with several detections, and its stored results."""
    source = live_server.query(
        "SELECT * FROM results.source_class WHERE is_unique AND detection_count >= 3 "
        "ORDER BY detection_count DESC, name LIMIT 1").row(0, named=True)
    detections = live_server.query(
        "SELECT * FROM results.detection_class WHERE name = ? ORDER BY obsid, det_id",
        [source["name"]])
    return {"source": source, "detections": detections}


def test_overview_counts_are_the_warehouse(live_server, browser) -> None:
    browser.get(live_server.url + "/")
    summary = wait_for(browser, "#overview-summary").text
    unique, ambiguous = live_server.query(
        "SELECT count(*) FILTER (WHERE is_unique), count(*) FILTER (WHERE NOT is_unique) "
        "FROM results.source_class").row(0)
    assert f"{unique:,} uniquely classified" in summary
    assert f"{ambiguous:,} ambiguous" in summary
    expected = live_server.query(
        "SELECT agg_master_class, master_class, count(*) AS n FROM results.source_class "
        "WHERE is_unique GROUP BY ALL")
    shown = table_rows(browser, "overview-class-table")
    assert {(r["aggregated class"], r["master class"], int(r["sources"])) for r in shown} == set(
        expected.iter_rows())
    run = browser.find_element(By.ID, "overview-run").text
    assert live_server.query("SELECT any_value(run_id) FROM model.gmm_components").item() in run
    wait_for(browser, "#overview-classes .main-svg")
    screenshot(browser, "overview")
    assert_no_console_errors(browser)


def test_search_by_name_then_open_the_source(live_server, browser, known) -> None:
    name = known["source"]["name"]
    browser.get(live_server.url + "/search")
    fill(browser, "search-name", name[:11])
    browser.find_element(By.ID, "search-by-name").click()
    link = wait_for(browser, "#search-table a", text=name)
    assert "name=" in browser.current_url
    prefix_count = live_server.query(
        "SELECT count(*) FROM results.source_class WHERE starts_with(name, ?)",
        [name[:11]]).item()
    count = browser.find_element(By.ID, "search-count").text
    assert (f"{prefix_count:,} source" in count if prefix_count <= 200
            else "there are more" in count)
    screenshot(browser, "search")
    browser.execute_script("window.xpMarker = 'same page'")
    link.click()
    wait_for(browser, "#source-detections")
    assert browser.execute_script("return window.xpMarker") == "same page"  # no reload
    check_source_page(browser, known)
    screenshot(browser, "source")
    assert_no_console_errors(browser)


def check_source_page(browser, known: dict) -> None:
    """Detections, probabilities, predicted classes and votes as in results.*"""
    source, detections = known["source"], known["detections"]
    assert browser.find_element(By.ID, "source-name-title").text == source["name"]
    rows = table_rows(browser, "source-detections")
    assert len(rows) == detections.height == source["detection_count"]
    for shown, stored in zip(rows, detections.iter_rows(named=True), strict=True):
        assert int(shown["det_id"]) == stored["det_id"]
        assert int(shown["obsid"]) == stored["obsid"]
        assert int(shown["cluster"]) == stored["cluster"]
        assert shown["pred_class"] == stored["pred_class"]
        for cls in PROBS:
            assert math.isclose(float(shown[cls]), stored[cls], abs_tol=1e-6), cls
    shown = facts(browser, "source-facts")
    assert shown["hard vote"] == source["hard_class"]
    assert shown["soft vote"] == source["soft_class"]
    assert shown["master class"] == f"{source['master_class']} ({source['agg_master_class']})"
    assert browser.find_element(By.ID, "source-adql").text.endswith(
        f"m.name = '{source['name']}'")
    wait_for(browser, "#source-figure .main-svg")


def test_search_by_cone(live_server, browser, known) -> None:
    source = known["source"]
    browser.get(live_server.url + "/search")
    for field, value in (("search-ra", source["ra"]), ("search-dec", source["dec"]),
                         ("search-radius", 30)):
        fill(browser, field, str(value))
    browser.find_element(By.ID, "search-by-cone").click()
    wait_for(browser, "#search-table a", text=source["name"])
    rows = table_rows(browser, "search-table")
    assert rows[0]["name"] == source["name"] and float(rows[0]["separation_arcsec"]) < 1e-3
    assert all(float(r["separation_arcsec"]) <= 30 for r in rows)
    assert "ra=" in browser.current_url
    browser.refresh()  # the search is a link: loading it shows the same, and no message
    wait_for(browser, "#search-table a", text=source["name"])
    assert table_rows(browser, "search-table") == rows
    assert not browser.find_elements(By.ID, "search-error")
    assert_no_console_errors(browser)


@pytest.mark.parametrize(("ra", "dec", "radius", "words"), [
    ("ten", "5", "10", "parameter ra='ten' is not a number"),
    ("10", "5", "7200", "parameter r=7200 is out of range"),
    ("10", "-91", "10", "parameter dec=-91 is out of range"),
    ("10", "", "10", "missing dec"),
])
def test_bad_cone_in_the_form_says_why(live_server, browser, ra, dec, radius, words) -> None:
    browser.get(live_server.url + "/search")
    for field, value in (("search-ra", ra), ("search-dec", dec), ("search-radius", radius)):
        fill(browser, field, value)
    browser.find_element(By.ID, "search-by-cone").click()
    assert words in wait_text(browser, "#search-error", words)
    assert browser.current_url.endswith("/search")  # nothing was searched
    assert_no_console_errors(browser)


def run_sql(browser, url: str, text: str) -> None:
    browser.get(url + "/sql")
    fill(browser, "sql-query", text)
    browser.find_element(By.ID, "sql-run").click()


def test_sql_page_runs_a_query(live_server, browser) -> None:
    run_sql(browser, live_server.url,
            "SELECT name, detection_count FROM results.source_class ORDER BY name")
    count = wait_text(browser, ".sql-count", "showing")
    total = live_server.query("SELECT count(*) FROM results.source_class").item()
    assert f"showing {min(total, 1000):,} of {total:,} rows" in count
    rows = table_rows(browser, "sql-table-1")
    first = live_server.query("SELECT name FROM results.source_class ORDER BY name LIMIT 3")
    assert [r["name"] for r in rows[:3]] == first["name"].to_list()
    screenshot(browser, "sql")
    assert_no_console_errors(browser)


def _state(live_server) -> tuple[str, float, list]:
    path: Path = live_server.warehouse
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    tables = live_server.query(
        "SELECT count(*), sum(hash(name, hard_class, soft_class)) FROM results.source_class"
    ).rows()
    return digest, path.stat().st_mtime, tables


@pytest.mark.parametrize("statement", [
    "DELETE FROM results.source_class",
    "CREATE TABLE results.mine AS SELECT 1",
    "COPY results.source_class TO 'stolen.csv'",
    "ATTACH 'other.duckdb' AS other",
])
def test_sql_page_refuses_a_write_and_changes_nothing(live_server, browser, statement) -> None:
    before = _state(live_server)
    run_sql(browser, live_server.url, statement)
    error = wait_text(browser, "#sql-error", "statement 1")
    assert "read-only" in error and "nothing was run" in error
    assert _state(live_server) == before
    assert not Path("stolen.csv").exists() and not Path("other.duckdb").exists()
    assert_no_console_errors(browser)


def test_sql_time_limit_stops_a_streaming_result_with_the_message(live_server) -> None:
    """A result interrupted while it streams (pyarrow raises the interruption as OSError)
    gets the time limit's message, on the page and in a download, never an internal error."""
    from xpipe.core.errors import UserQueryError
    from xpipe.serve.context import PageContext
    from xpipe.serve.pages import sql
    from xpipe.serve.settings import ServeSettings

    ctx = PageContext(live_server.reader, ServeSettings(allow_sql=True, sql_time_limit_s=0.3))
    with pytest.raises(UserQueryError, match=r"longer than 0\.3 s"):
        sql.run_query(ctx, "SELECT i FROM range(3000000000) t(i)")
    with pytest.raises(UserQueryError, match=r"longer than 0\.3 s"):
        sql.download(ctx, "SELECT i FROM range(300000000) t(i)", "votable")
    assert list(ctx.downloads.folder.iterdir()) == [], "a stopped download leaves no file"


def read_back(data: bytes, fmt: str, text: str) -> pl.DataFrame:
    """A downloaded file as a frame; VOTable and FITS must carry the query in their metadata."""
    import io

    from astropy.io.votable import parse
    from astropy.table import Table

    if fmt == "csv":
        return pl.read_csv(io.BytesIO(data))
    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(data))
    if fmt == "votable":
        infos = {i.name: i.value for i in parse(io.BytesIO(data)).resources[0].infos}
        assert infos["xpipe_query"] == text
    table = Table.read(io.BytesIO(data), format=fmt)
    if fmt == "fits":
        assert table.meta["XPQUERY"] == text
    return pl.DataFrame({c: table[c].tolist() for c in table.colnames})


def fetch(live_server, path: str) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of a GET, 4xx included."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(live_server.url + path, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_sql_time_limit_and_download(live_server) -> None:
    """A query over the time limit is stopped with a message; the download is the whole
    result, a file on disk (never in the answer) that /download/<token> streams once, with
    its name and media type, then deletes (all four formats read back equal)."""
    from xpipe.core.errors import UserQueryError
    from xpipe.serve.context import PageContext
    from xpipe.serve.pages import sql
    from xpipe.serve.settings import ServeSettings

    downloads = live_server.app.server.extensions["xpipe_downloads"]
    ctx = PageContext(live_server.reader, ServeSettings(allow_sql=True, sql_time_limit_s=0.3,
                                                        sql_max_rows=5), downloads)
    with pytest.raises(UserQueryError, match=r"longer than 0\.3 s"):
        sql.run_query(ctx, "SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3")
    text = "SELECT name, ra, detection_count FROM results.source_class ORDER BY name"
    shown = sql.run_query(ctx, text)[0]
    expected = live_server.query(text)
    assert shown.total == expected.height and shown.frame.equals(expected.head(5))
    for fmt, suffix, media in (("csv", "csv", "text/csv"),
                               ("parquet", "parquet", "application/vnd.apache.parquet"),
                               ("votable", "vot", "application/x-votable+xml"),
                               ("fits", "fits", "application/fits")):
        pending = sql.download(ctx, text, fmt)
        assert pending.filename == f"xpipe-query.{suffix}"
        assert pending.path.parent == downloads.folder
        assert not pending.path.is_relative_to(live_server.warehouse.parent)
        on_disk = pending.path.read_bytes()
        status, body, headers = fetch(live_server, pending.url)
        assert status == 200 and body == on_disk, fmt
        assert headers["Content-Type"].startswith(media)
        assert headers["Content-Length"] == str(len(on_disk))
        assert f"attachment; filename=xpipe-query.{suffix}" in headers["Content-Disposition"]
        assert not pending.path.exists(), "the file is deleted once fetched"
        assert fetch(live_server, pending.url)[0] == 404, "a link works once"
        got = read_back(body, fmt, text)
        assert got.select(expected.columns).equals(expected), fmt
    assert list(downloads.folder.iterdir()) == []


@pytest.mark.parametrize("token", ["nope", "A" * 43, "..%2F..%2Fetc%2Fpasswd"])
def test_unknown_download_token_is_404(live_server, token: str) -> None:
    status, body, _ = fetch(live_server, "/download/" + token)
    assert status == 404
    text = body.decode()
    assert "no such download" in text and "works once" in text and "Traceback" not in text


def test_download_callback_answers_a_link_not_the_data(live_server) -> None:
    """What the browser gets from the download button is a link of a few hundred bytes,
    whatever the size of the result: the data stays in the file until the link is followed."""
    import json
    import urllib.request

    text = "SELECT i, 'row ' || i AS label FROM range(200000) t(i)"
    output = next(key for key in live_server.app.callback_map
                  if "sql-download.children" in key)
    result_prop = output.strip(".").split("...")[1].split(".", 1)[1]
    body = {"output": output,
            "outputs": [{"id": "sql-download", "property": "children"},
                        {"id": "sql-result", "property": result_prop}],
            "inputs": [{"id": f"sql-download-{f}", "property": "n_clicks",
                        "value": 1 if f == "csv" else None}
                       for f in ("csv", "parquet", "votable", "fits")],
            "changedPropIds": ["sql-download-csv.n_clicks"],
            "state": [{"id": "sql-query", "property": "value", "value": text}]}
    request = urllib.request.Request(live_server.url + "/_dash-update-component",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = response.read()
    assert len(answer) < 2_000 and b"row 199999" not in answer
    link = json.loads(answer)["response"]["sql-download"]["children"]
    url = link["props"]["children"][0]["props"]["href"]
    assert url.startswith("/download/")
    status, data, _ = fetch(live_server, url)
    assert status == 200 and len(data) > 100 * len(answer)
    frame = pl.read_csv(data)
    assert frame.height == 200_000 and frame["label"][-1] == "row 199999"


def test_sql_page_download_button_saves_the_file(live_server, browser, tmp_path) -> None:
    """The button's link is followed by itself: the browser saves the whole result."""
    import time

    browser.execute_cdp_cmd("Browser.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(tmp_path)})
    text = "SELECT name, detection_count FROM results.source_class ORDER BY name"
    browser.get(live_server.url + "/sql")
    fill(browser, "sql-query", text)
    browser.find_element(By.ID, "sql-download-csv").click()
    wait_for(browser, "#sql-download-link")
    saved = tmp_path / "xpipe-query.csv"
    deadline = time.monotonic() + 30
    while not saved.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert saved.exists(), list(tmp_path.iterdir())
    assert pl.read_csv(saved).equals(live_server.query(text))
    assert_no_console_errors(browser)
