"""The explorer's shell: every page loads in Chromium, bad URLs get a 4xx and a message."""

from __future__ import annotations

import pytest
from browser import assert_no_console_errors, wait_for


@pytest.mark.parametrize("path", ["/", "/sky", "/properties", "/search", "/sql"])
def test_each_page_loads(live_server, browser, path: str) -> None:
    browser.get(live_server.url + path)
    wait_for(browser, "#page h1")
    assert_no_console_errors(browser)


def test_unknown_page_is_404(live_server) -> None:
    status, body = live_server.get("/nowhere")
    assert status == 404 and "no page at /nowhere" in body and "Traceback" not in body
