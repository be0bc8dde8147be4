"""`xpipe report` and `xpipe explain`: the HTML as a file and as a person sees it in a browser."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import duckdb
import pytest
from browser import chromium, severe_console_entries
from science_fixtures import classified_copy

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
FIGURES = ["fig-stages", "fig-bic", "fig-sky-clusters", "fig-sky-classes", "fig-hardness",
           "fig-variability", "fig-confusion-classes", "fig-confusion-aggregated",
           "fig-confusion-groups", "fig-stability"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return classified_copy(tmp_path_factory, "report")


@pytest.fixture(scope="module")
def full_report(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report after every analysis ran (small settings: this is about the page)."""
    from click.testing import CliRunner

    from xpipe.cli.main import main

    out = tmp_path_factory.mktemp("report-out") / "report.html"
    runner = CliRunner()
    for args in (["bic", "--kmin", "2", "--kmax", "4", "--seeds", "1", "--jobs", "1"],
                 ["validate"], ["stability", "--seeds", "43", "--k", "5", "--no-control"],
                 ["report", "--out", str(out)]):
        result = runner.invoke(main, ["--warehouse", str(warehouse), *args],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return out


def figure_pngs(page: str) -> dict[str, bytes]:
    found = re.findall(r'<figure id="([^"]+)" class="xp-figure"><img src="data:image/png;base64,'
                       r'([A-Za-z0-9+/=]+)"', page)
    return {fig_id: base64.b64decode(data) for fig_id, data in found}


def test_report_before_the_analyses_says_what_is_missing(warehouse, cli, tmp_path) -> None:
    out = tmp_path / "early.html"
    result = cli("--warehouse", str(warehouse), "report", "--out", str(out))
    assert "3 section(s) not computed yet" in result.output
    page = out.read_text()
    assert page.count("Not computed yet:</strong>") == 3
    for command in ("xpipe bic", "xpipe validate", "xpipe stability"):
        assert f"<code>{command}</code>" in page
    pngs = figure_pngs(page)
    assert set(pngs) == {"fig-stages", "fig-sky-clusters", "fig-sky-classes", "fig-hardness",
                         "fig-variability"}
    assert "Cohen's kappa" in page  # computed from the stored votes in any case


def test_report_is_complete_and_self_contained(full_report: Path) -> None:
    page = full_report.read_text()
    pngs = figure_pngs(page)
    assert list(pngs) == FIGURES  # every figure, in reading order
    for fig_id, png in pngs.items():
        assert png.startswith(PNG) and len(png) > 15_000, fig_id
    assert "Not computed yet" not in page and "Stale" not in page
    # nothing to fetch: no external scripts, styles, images or fonts
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page
    # Table 3: a row per cluster with its SIMBAD types; the run metadata lists every command
    assert page.count("<td>") > 100 and "ten most common SIMBAD types" in page
    for command in ("warehouse", "classify", "bic", "validate", "stability"):
        assert f"<td>{command}</td>" in page


def test_report_marks_stale_analyses(warehouse, full_report, cli) -> None:
    from xpipe.science.common import classify_run_id
    from xpipe.science.report import stability_section, validation_section

    con = duckdb.connect(str(warehouse))
    con.execute("UPDATE results.stability SET classify_run_id = 'an-older-run'")
    current = classify_run_id(con)
    stale = stability_section(con, current).body
    fresh = validation_section(con, current).body
    con.close()
    assert "<strong>Stale:</strong>" in stale and "an-older-run" in stale
    assert "Stale" not in fresh
    args = ["--warehouse", str(warehouse), "stability", "--seeds", "43", "--k", "6",
            "--no-control", "--skip-if-current"]  # one refit: K = 6 is the stored K
    assert "skipping" not in cli(*args).output  # stale results are recomputed
    assert "skipping" in cli(*args).output  # current ones are not


def test_report_in_headless_chromium(full_report: Path, tmp_path: Path) -> None:
    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.set_page_load_timeout(60)
        driver.get(full_report.as_uri())
        state = driver.execute_script("""
            return Array.from(document.querySelectorAll('figure.xp-figure')).map(f => {
                const img = f.querySelector('img');
                const box = img.getBoundingClientRect();
                return {id: f.id, complete: img.complete, natural: img.naturalWidth,
                        width: box.width, height: box.height,
                        caption: (f.querySelector('figcaption') || {}).textContent || ''};
            });""")
        errors = severe_console_entries(driver)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 30_000))
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "report.png"))
        driver.set_window_size(1280, 900)
        driver.execute_script("document.getElementById('validation').scrollIntoView()")
        driver.save_screenshot(str(ARTIFACTS / "report-validation.png"))
    finally:
        driver.quit()
    assert errors == []
    assert [s["id"] for s in state] == FIGURES
    for s in state:
        assert s["complete"] and s["natural"] > 300, s
        assert s["width"] > 300 and s["height"] > 150, s
        assert len(s["caption"]) > 20, s
    assert (ARTIFACTS / "report.png").read_bytes().startswith(PNG)


def test_explain_a_source(warehouse, cli, tmp_path) -> None:
    con = duckdb.connect(str(warehouse), read_only=True)
    name, n, hard, soft = con.sql(
        "SELECT name, detection_count, hard_class, soft_class FROM results.source_class "
        "WHERE detection_count >= 3 ORDER BY detection_count DESC, name LIMIT 1").fetchall()[0]
    mean = con.execute("SELECT mean_probability FROM results.source_class_probs "
                       "WHERE name = ? AND class = ?", [name, soft]).fetchall()[0][0]
    reference = con.sql("SELECT name, label_class FROM model.detection_roles "
                        "WHERE role = 'reference' LIMIT 1").fetchall()[0]
    con.close()
    out = tmp_path / "explain.png"
    result = cli("--warehouse", str(warehouse), "explain", name, "--out", str(out))
    text = result.output
    assert name in text and "hard vote" in text and f"→ {hard}" in text
    assert f"soft vote: highest mean probability → {soft}" in text
    assert f"{mean:.3f}" in text and "[" in text  # the mean and its 95 % band
    assert len([line for line in text.splitlines() if re.match(r"\s+\d+\s+\d+\s", line)]) >= n
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 15_000

    refused = cli("--warehouse", str(warehouse), "explain", reference[0], expect_ok=False)
    assert refused.exit_code == 1 and "is a reference" in refused.output
    assert reference[1] in refused.output
    unknown = cli("--warehouse", str(warehouse), "explain", "2CXO J000000.0+000000",
                  expect_ok=False)
    assert unknown.exit_code == 1 and "no source named" in unknown.output


def test_commands_need_a_classification(cli, tmp_path) -> None:
    path = str(tmp_path / "loaded.duckdb")
    cli("--warehouse", path, "warehouse", "--source", "sim", "--sim-dir",
        str(tmp_path / "sim"), "--detections", "3000", "--seed", "3")
    for args in (["validate"], ["stability"], ["bic"], ["explain", "2CXO J1"]):
        result = cli("--warehouse", path, *args, expect_ok=False)
        assert result.exit_code == 1 and "run `xpipe classify` first" in result.output, args
    result = cli("--warehouse", path, "report", expect_ok=False)
    assert "run `xpipe classify` first" in result.output
