"""Rendered reports in headless Chromium: no console errors, every image decodes, screenshots.

Needs /usr/bin/chromium and /usr/bin/chromedriver (the CI script installs them): without them
the tests fail when CI=true and are skipped otherwise. Screenshots (full page) are saved under
the session's tmp folder, `browser_screenshots/`, for a person to look at.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from tests.test_report import HOSTILE_SITE, build_rendered_study

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGUMENTS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)


def _browser_missing() -> str | None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing and shutil.which(str(CHROMIUM)) is None:
        missing.append(f"{CHROMIUM} (not executable)")
    return f"headless browser not installed: {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def rendered_study(tmp_path_factory):
    return build_rendered_study(tmp_path_factory.getbasetemp() / "rendered_study")


@pytest.fixture(scope="module")
def browser():
    problem = _browser_missing()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI must install chromium and chromium-driver")
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser_screenshots", numbered=False)


def test_reports_open_cleanly_and_every_image_decodes(rendered_study, browser, screenshots):
    assert rendered_study.html_files
    for path in rendered_study.html_files:
        browser.get(path.resolve().as_uri())
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], f"{path.name}: {errors}"
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);"
        )
        assert images, f"{path.name} has no figure"
        broken = [
            index for index, (complete, width) in enumerate(images) if not complete or width == 0
        ]
        assert broken == [], f"{path.name}: images {broken} do not decode"
        # Full page through the DevTools protocol (a plain screenshot is the viewport only).
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        target = screenshots / f"{path.stem}.png"
        target.write_bytes(base64.b64decode(shot["data"]))
        assert target.stat().st_size > 10_000


def test_reports_render_offline_without_scripts_from_the_network(rendered_study, browser):
    for path in rendered_study.html_files:
        browser.get(path.resolve().as_uri())
        remote = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => !n.startsWith('data:') && !n.startsWith('file:'));"
        )
        assert remote == [], f"{path.name} fetched {remote}"


def test_a_report_built_from_hostile_names_runs_no_script(rendered_study, browser):
    """The site named like an <img onerror> tag: no alert fires, no handler is in the page."""
    browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "window.__alerts = []; window.alert = m => window.__alerts.push(String(m));"},
    )
    path = rendered_study.site_report(HOSTILE_SITE)
    browser.get(path.resolve().as_uri())
    assert browser.execute_script("return window.__alerts") == []
    handlers = browser.execute_script(
        "return Array.from(document.querySelectorAll('*')).filter(e =>"
        " Array.from(e.attributes).some(a => a.name.startsWith('on'))).length;"
    )
    assert handlers == 0
    assert HOSTILE_SITE in browser.execute_script("return document.body.innerText")
