"""The explorer's shell: every page loads in Chromium without console errors, bad URLs get a
4xx with a message (never a traceback), a failing callback says so in the page, Dash's debug
tools are off and nothing is fetched from elsewhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from browser import assert_no_console_errors, screenshot, wait_for, wait_text

PAGES = {"/": "Overview", "/sky": "Sky", "/properties": "Properties", "/search": "Search",
         "/sql": "SQL", "/source": "Source"}


@pytest.mark.parametrize("path", list(PAGES))
def test_each_page_loads(live_server, browser, path: str) -> None:
    browser.get(live_server.url + path)
    wait_for(browser, "#page h1", text=PAGES[path])
    assert "Traceback" not in browser.page_source
    assert_no_console_errors(browser)


@pytest.mark.parametrize(("path", "status", "words"), [
    ("/nowhere", 404, "no page at /nowhere"),
    ("/sky/extra", 404, "no page at /sky/extra"),
    ("/source/" + quote("2CXO J000000.0+000000"), 404,
     "no source named &#x27;2CXO J000000.0+000000&#x27;"),
    ("/search?ra=abc&dec=1&r=5", 400, "parameter ra=&#x27;abc&#x27; is not a number"),
    ("/search?ra=10&dec=95&r=5", 400, "parameter dec=95 is out of range"),
    ("/search?ra=10&dec=5&r=1e9", 400, "parameter r=1e9 is out of range"),
    ("/search?ra=10&dec=5&r=nan", 400, "parameter r=nan is out of range"),
    ("/search?ra=10&dec=5", 400, "missing r"),
    ("/search?name=" + "x" * 3000, 400, "the query string has 3,005 characters"),
])
def test_bad_urls_get_a_4xx_and_a_message(live_server, path: str, status: int,
                                           words: str) -> None:
    got, body = live_server.get(path)
    assert got == status
    assert words in body and 'id="http-error"' in body.replace("'", '"')
    assert "Traceback" not in body and "File \"" not in body


def test_a_bad_url_in_the_browser_shows_the_message(live_server, browser) -> None:
    browser.get(live_server.url + "/search?ra=10&dec=5&r=99999")
    wait_text(browser, "#http-error", "parameter r=99999 is out of range")
    screenshot(browser, "bad-url")
    browser.get_log("browser")  # the 400 itself is logged as a failed load: expected here


def test_in_app_navigation_to_an_unknown_source_says_so(live_server, browser) -> None:
    browser.get(live_server.url + "/source")
    box = wait_for(browser, "#source-name")
    box.send_keys("2CXO J000000.0+000000\n")
    wait_text(browser, "#page-error", "no source named")
    assert browser.current_url.endswith("/source/2CXO%20J000000.0%2B000000")
    assert_no_console_errors(browser)


def test_a_failing_callback_shows_a_message_not_a_traceback(live_server, browser,
                                                            monkeypatch) -> None:
    from xpipe.serve.pages import search

    def broken(*_args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(search, "find", broken)
    browser.get(live_server.url + "/search")
    wait_for(browser, "#search-name").send_keys("2CXO\n")
    wait_text(browser, "#app-error .xp-error", "internal error")
    assert "secret" not in browser.page_source
    assert_no_console_errors(browser)


def test_debug_tools_are_off_and_nothing_is_remote(live_server) -> None:
    status, page = live_server.get("/")
    assert status == 200
    config = json.loads(re.search(r'<script id="_dash-config"[^>]*>(.*?)</script>',
                                  page, re.S).group(1))
    assert config["ui"] is False and config["serve_locally"] is True
    assert config["disable_version_check"] is True
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for script in re.findall(r'<script src="([^"]+)"', page):
        assert live_server.get(script)[0] == 200, script


def test_sql_page_off_beyond_loopback(serve_warehouse: Path) -> None:
    """With allow_sql off the nav hides the SQL page, the page says why, and its callback
    refuses to run anything."""
    from xpipe.core.errors import UserQueryError
    from xpipe.serve.app import create_app
    from xpipe.serve.context import PageContext
    from xpipe.serve.pages import sql
    from xpipe.serve.settings import ServeSettings

    settings = ServeSettings(allow_sql=False, host="0.0.0.0")
    app = create_app(serve_warehouse, settings)
    reader = app.server.extensions["xpipe_reader"]
    try:
        layout = app.server.test_client().get("/_dash-layout").get_data(as_text=True)
        assert '"nav-sky"' in layout and '"nav-sql"' not in layout
        page = str(sql.layout(PageContext(reader, settings), "", {}))
        assert "--allow-sql" in page and "sql-query" not in page
        with pytest.raises(UserQueryError, match="SQL page is off"):
            sql.run_query(PageContext(reader, settings), "SELECT 1")
    finally:
        reader.close()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("192.168.1.10", False), ("::", False)])
def test_sql_is_on_by_default_only_on_loopback(host: str, loopback: bool) -> None:
    from xpipe.serve.settings import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400),
    (b"{}", 400),
    (b'{"output": "nope.children", "inputs": []}', 400),
    (b'{"output": "sql-result.children", "inputs": "x"}', 400),
])
def test_dash_json_endpoint_answers_bad_bodies_with_400(live_server, body: bytes,
                                                        status: int) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(live_server.url + "/_dash-update-component", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=30)
    assert failure.value.code == status
    text = failure.value.read().decode()
    assert "not a request for one of this app&#x27;s callbacks" in text
    assert "Traceback" not in text


def test_unknown_script_is_404(live_server) -> None:
    status, body = live_server.get("/_dash-component-suites/dash/no-such-file.js")
    assert status == 404 and "Traceback" not in body
