"""Headless Debian Chromium for the browser tests (skips when chromium or its driver is
missing): the report's test and the explorer's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "serve"

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium(profile: Path, window: str = "1280,900") -> Any:
    """A started headless Chromium (selenium WebDriver) that logs the browser console."""
    chromium_path = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium_path or not driver_path:
        pytest.skip("headless Chromium test needs the Debian packages chromium and "
                    "chromium-driver (`apt-get install chromium chromium-driver`; .ci/run "
                    "installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for flag in (*FLAGS, f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def severe_console_entries(driver: Any) -> list[dict]:
    """Console entries at level SEVERE since the last call (errors, failed loads)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def assert_no_console_errors(driver: Any) -> None:
    """No SEVERE entry in the browser console since the last check."""
    errors = severe_console_entries(driver)
    assert errors == [], errors


def screenshot(driver: Any, name: str) -> Path:
    """artifacts/serve/NAME.png (git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path))
    return path


def wait_for(driver: Any, css: str, *, text: str | None = None, timeout: float = 20) -> Any:
    """The first element matching `css` (containing `text` if given), once Dash drew it; an
    element Dash replaces while it is being read is looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d: Any) -> Any:
        try:
            for element in d.find_elements(By.CSS_SELECTOR, css):
                if text is None or text in element.text:
                    return element
        except StaleElementReferenceException:
            pass
        return False

    try:
        return WebDriverWait(driver, timeout).until(found)
    except TimeoutException:
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]
        raise AssertionError(f"no {css!r} with text {text!r} within {timeout} s; "
                             f"shown: {shown}") from None


def wait_text(driver: Any, css: str, text: str, timeout: float = 20) -> str:
    """The text of the first element matching `css` once it contains `text`."""
    from selenium.webdriver.support.ui import WebDriverWait

    wait_for(driver, css, text=text, timeout=timeout)
    return str(WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "const e = document.querySelector(arguments[0]); return e && e.innerText;", css)))
