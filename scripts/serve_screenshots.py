"""Screenshots of the explorer's pages for docs/serve.md, from a classified warehouse.

    .venv/bin/python scripts/serve_screenshots.py WAREHOUSE OUT_DIR

Starts `xpipe serve`'s app on a free loopback port, opens each page in headless Chromium
(Debian's chromium and chromium-driver) at 1200×800 and writes OUT_DIR/serve-<page>.png.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote, urlencode

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from xpipe.serve.app import create_app
from xpipe.serve.settings import ServeSettings


def browser(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--window-size=1200,800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def shoot(driver: webdriver.Chrome, url: str, ready: str, out: Path) -> None:
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    driver.save_screenshot(str(out))
    print(f"wrote {out}")


def shoot_plot(driver: webdriver.Chrome, url: str, graph: str, out: Path) -> None:
    """A Sky or Properties page once its graph has drawn its view (a taller window: the
    whole graph), as a 256-colour PNG (a third of the size)."""
    from PIL import Image

    driver.set_window_size(1200, 1050)
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        f"const g = document.querySelector('#{graph} .js-plotly-plot');"
        "return g && g._fullLayout && g.layout.meta && g.layout.meta.view"))
    WebDriverWait(driver, 30).until(lambda d: d.execute_async_script(
        "requestAnimationFrame(() => requestAnimationFrame(() => arguments[0](true)))"))
    driver.save_screenshot(str(out))
    driver.set_window_size(1200, 800)
    Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)
    print(f"wrote {out}")


def main(warehouse: Path, out_dir: Path) -> None:
    app = create_app(warehouse, ServeSettings(allow_sql=True, port=0))
    reader = app.server.extensions["xpipe_reader"]
    (name,) = reader.rows(
        "SELECT name FROM results.source_class WHERE is_unique AND "
        "detection_count BETWEEN 4 AND 8 ORDER BY detection_count DESC, name LIMIT 1")[0]
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.port}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            shoot(driver, base + "/", "#overview-classes .main-svg", out_dir / "serve-overview.png")
            shoot_plot(driver, base + "/sky?density=1", "sky-graph", out_dir / "serve-sky.png")
            shoot_plot(driver, base + "/properties?x=hard_ms&y=var_ratio_b&log_y=1",
                       "props-graph", out_dir / "serve-properties.png")
            cone = urlencode({"ra": "266.4", "dec": "-28.94", "r": "3600"})  # Galactic centre
            shoot(driver, f"{base}/search?{cone}", "#search-table", out_dir / "serve-search.png")
            shoot(driver, f"{base}/source/{quote(name, safe='')}", "#source-figure .main-svg",
                  out_dir / "serve-source.png")
            driver.get(base + "/sql")
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "sql-run"))
            driver.find_element(By.ID, "sql-run").click()
            WebDriverWait(driver, 30).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".sql-count"))
            driver.save_screenshot(str(out_dir / "serve-sql.png"))
            print(f"wrote {out_dir / 'serve-sql.png'}")
        finally:
            driver.quit()
            server.shutdown()
            reader.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
