"""A real headless Chromium for the console's tests: Debian's ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them), driven by Selenium through /usr/bin/chromedriver named explicitly, so Selenium Manager never
downloads a browser or a driver. Without them the tests skip with the reason (in CI they must run)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30  # seconds: explicit waits are generous (a loaded machine), never a measure of speed


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for a test module (starting one takes seconds): ``browser`` gives each test a fresh
    tab of it."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install '.[test]')")
    os.environ.setdefault("SE_OFFLINE", "true")  # and should Selenium Manager ever run: never download
    profile = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", f"--user-data-dir={profile / 'profile'}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: Any, tmp_path: Path) -> Iterator[Any]:
    """The module's Chromium in a fresh tab of its own (the console keeps its token in the tab's session storage,
    so nothing is left from another test: the earlier tabs are closed, cookies and the cache cleared), downloading
    into ``tmp_path / "downloads"``. ``browser.shots``: where screenshots go (test artefacts)."""
    driver = chromium
    earlier = list(driver.window_handles)
    driver.switch_to.new_window("tab")
    fresh = driver.current_window_handle
    for handle in earlier:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(fresh)
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    driver.shots = tmp_path / "screenshots"
    driver.shots.mkdir()
    yield driver
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # in case a test failed while emulating


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that drives Chromium (through ``browser`` or ``chromium``) is a browser run: marked ``slow``, so it
    runs in ``make test-all`` (CI), not in ``make test``. The console's other tests stay in the quick tier."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()) and item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.slow)
