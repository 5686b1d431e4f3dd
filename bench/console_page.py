"""How fast the web console shows a store's first page of records, for a store of 10 keys and one of a million:
``python -m bench.console_page [--backends sqlite,postgres] [--runs N]``.

A real headless Chromium (Debian's, as in tests/console/) loads the store's page afresh each run; the time is the
page's own mark ``openkvs:page-shown`` (set when the records table is on screen), from the start of the navigation:
HTML, scripts, the store, its grants, its first page of 50 keys. Not part of ``python -m bench``'s default set."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from bench import harness as h

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def first_page_ms(driver: Any, server: h.Server, ds: h.Dataset, runs: int) -> list[float]:
    driver.get(f"{server.url}/console/")
    driver.execute_script("sessionStorage.setItem('openkvs.token', arguments[0])", ds.token)
    times = []
    for _ in range(runs + 1):  # the first run warms the server's caches and the browser's: not counted
        driver.get("about:blank")
        driver.get(f"{server.url}/console/#/key-value-stores/{ds.store_id}")
        deadline = time.monotonic() + 120
        shown = None
        while shown is None and time.monotonic() < deadline:
            shown = driver.execute_script(
                "const m = performance.getEntriesByName('openkvs:page-shown');"
                "return m.length && document.querySelectorAll('table.records tbody tr').length ? m[0].startTime : null")
            time.sleep(0.02)
        assert shown is not None, "the first page never showed"
        times.append(float(shown))
    return times[1:]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.console_page", description=__doc__)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    driver = browser()
    try:
        for kind in args.backends.split(","):
            for count in (10, 1_000_000):
                ds = h.clone_dataset(kind, f"tiny{count}", count, os.urandom(100))
                server = ds.backend.start()
                try:
                    ms = first_page_ms(driver, server, ds, args.runs)
                finally:
                    server.stop()
                print(f"{kind:8} {count:>9} keys: first page shown in median {statistics.median(ms):.0f} ms "
                      f"(min {min(ms):.0f}, max {max(ms):.0f}, {len(ms)} runs)", flush=True)
    finally:
        driver.quit()
        if "postgres" in args.backends:
            h.drop_postgres_datasets()


if __name__ == "__main__":
    main()
