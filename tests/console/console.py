"""Driving the console in the browser the way a user does: by what the page shows (labels, buttons), with
explicit waits (never a sleep) and generous timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 30
MARK = "top.__pwned=(top.__pwned||0)+1"  # what every planted script does, if it ever runs in the console
IMG = f"<img src=x onerror={MARK}>"
PHONE = {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True}  # a phone's screen, in CSS pixels


class Console:
    def __init__(self, driver: Any, url: str) -> None:
        self.d = driver
        self.url = url

    # -- finding and waiting ---------------------------------------------------------------------------------------
    def until(self, condition: Any, timeout: float = WAIT, message: str = "", poll: float = 0.1) -> Any:
        def check(d: Any) -> Any:
            try:
                return condition(d)
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        return WebDriverWait(self.d, timeout, poll_frequency=poll).until(check, message)

    def find(self, css: str) -> WebElement:
        return self.until(lambda d: d.find_element(By.CSS_SELECTOR, css), message=f"no {css}")

    def all(self, css: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def button(self, text: str, within: str = "body") -> WebElement:
        def found(d: Any) -> WebElement | bool:
            for b in d.find_elements(By.CSS_SELECTOR, f"{within} button, {within} a.button"):
                if b.text.strip() == text and b.is_displayed() and b.is_enabled():
                    return b
            return False

        return self.until(found, message=f"no button {text!r}")

    def text(self, css: str = "body") -> str:
        return self.find(css).text

    def wait_text(self, css: str, text: str) -> None:
        self.until(lambda d: text in d.find_element(By.CSS_SELECTOR, css).text, message=f"{text!r} not in {css}")

    def shot(self, name: str) -> Path:
        path = self.d.shots / f"{name}.png"
        self.d.save_screenshot(str(path))
        return path

    # -- what a user does --------------------------------------------------------------------------------------------
    def open(self, fragment: str = "") -> None:
        self.d.get(f"{self.url}/console/{fragment}")

    def sign_in(self, token: str) -> None:
        self.d.get(self.url + "/")
        self.find("#token").send_keys(token)
        self.button("Sign in").click()
        self.page_ready()

    def page_ready(self) -> None:
        self.until(lambda d: d.find_elements(By.CSS_SELECTOR, "main .page:not([aria-busy])"), message="page not loaded")

    def records(self) -> list[str]:
        """The keys listed on the store's page, once the listing is there."""
        self.find("table.records")
        return [e.text for e in self.all("table.records button.record-key")]

    def wait_records(self, keys: list[str]) -> None:
        self.until(lambda d: self.records() == keys, message=f"records are not {keys}")

    def answer(self, value: str | None = None, confirm: bool = True) -> None:
        """Answer the open dialog: type ``value`` into its field, then confirm (or cancel)."""
        dialog = self.find("dialog.ask[open]")
        if value is not None:
            field = dialog.find_element(By.CSS_SELECTOR, "input")
            field.clear()
            field.send_keys(value)
        dialog.find_element(By.CSS_SELECTOR, "button[type=submit]" if confirm else "button[type=button]").click()
        self.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog.ask"), message="dialog still open")

    def open_store(self, name: str) -> None:
        self.open("#/key-value-stores")
        self.page_ready()
        link = self.until(lambda d: next((a for a in d.find_elements(By.CSS_SELECTOR, "a.resource-link") if a.text == name), False),
                          message=f"no store {name}")
        link.click()
        self.page_ready()
        self.find("table.records")

    def row(self, key: str) -> WebElement:
        def found(d: Any) -> WebElement | bool:
            for tr in d.find_elements(By.CSS_SELECTOR, "table.records tbody tr"):
                if tr.find_element(By.CSS_SELECTOR, "button.record-key").text == key:
                    return tr
            return False

        return self.until(found, message=f"no record {key}")

    def click_in_row(self, key: str, by: str, value: str) -> None:
        """Click the element (``by``, ``value``) in the row of record ``key``: found and clicked in one wait, again
        when the list re-rendered meanwhile (it does after an upload or a delete: the row found just before is gone)."""

        def clicked(d: Any) -> bool:
            self.row(key).find_element(by, value).click()
            return True

        self.until(clicked, message=f"could not click {value} of {key}")

    def preview(self, key: str) -> WebElement:
        self.click_in_row(key, By.CSS_SELECTOR, "button.record-key")
        return self.until(lambda d: d.find_element(By.CSS_SELECTOR, f".preview[data-key='{key}']"), message=f"no preview of {key}")

    def downloaded(self, name: str, timeout: float = WAIT) -> bytes:
        """The bytes of a finished download (Chromium writes NAME.crdownload until it is complete)."""
        path = self.d.downloads / name
        self.until(lambda d: path.exists() and not (self.d.downloads / f"{name}.crdownload").exists(), timeout,
                   message=f"{name} not downloaded: {sorted(p.name for p in self.d.downloads.iterdir())}")
        return path.read_bytes()

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def pwned(self) -> int:
        """How many times a planted script (MARK) ran in the page: 0, always."""
        return int(self.js("return top.__pwned || 0"))

    def listed(self, name: str) -> tuple[WebElement, dict[str, str]]:
        """On a list page (stores, datasets, queues): the link named ``name``, once listed, and its row's cells by
        their column label."""

        def found(d: Any) -> tuple[WebElement, dict[str, str]] | bool:
            # link and cells read in one go, again if the list re-rendered meanwhile (it does after sign-in)
            try:
                link = next((a for a in self.all("a.resource-link") if a.text == name), None)
                if link is None:
                    return False
                row = link.find_element(By.XPATH, "./ancestor::tr")
                return link, {td.get_attribute("data-label"): td.text for td in row.find_elements(By.CSS_SELECTOR, "td")}
            except StaleElementReferenceException:
                return False

        return self.until(found, message=f"{name} not listed")  # type: ignore[no-any-return]

    def check_phone_width(self, shot: str) -> None:
        """The page on a phone's screen (375 CSS pixels) is no wider than the screen (long values wrap, wide tables
        scroll in their box); a screenshot ``shot``; then the window's own size again."""
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        try:
            self.until(lambda d: self.js("return document.documentElement.clientWidth") == PHONE["width"])
            self.shot(shot)
            assert self.js("return document.documentElement.scrollWidth") == PHONE["width"]
        finally:
            self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
