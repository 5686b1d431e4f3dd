"""A real headless Chromium for the console's tests: Debian's ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them), driven by Selenium through /usr/bin/chromedriver named explicitly, so Selenium Manager never
downloads a browser or a driver. Without them the tests skip with the reason (in CI they must run)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30  # seconds: explicit waits are generous (a loaded machine), never a measure of speed


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A fresh headless Chromium per test (its own profile: no token left from another test), downloading into
    ``tmp_path / "downloads"``. ``browser.shots``: where screenshots go (test artefacts)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install '.[test]')")
    os.environ.setdefault("SE_OFFLINE", "true")  # and should Selenium Manager ever run: never download
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.downloads = downloads  # type: ignore[attr-defined]
    driver.shots = tmp_path / "screenshots"  # type: ignore[attr-defined]
    driver.shots.mkdir()  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()
