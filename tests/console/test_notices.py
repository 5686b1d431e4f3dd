"""The status line's notices, in a real headless Chromium: a notice stays on the page it is shown on and goes when
the user moves to another page ("Signed in." stayed on every page after); one that an action shows as it moves to
another page itself (sign in, create, delete) is on the page it leads to, and goes at the next move."""

from __future__ import annotations

import secrets
from typing import Any

from selenium.webdriver.common.by import By

from tests.conftest import Server
from tests.console.console import Console


def status(c: Console) -> str:
    return str(c.js("return document.getElementById('status').textContent"))


def go(c: Console, title: str) -> None:
    c.until(lambda d: next((a for a in d.find_elements(By.CSS_SELECTOR, "#nav a") if a.text == title), False),
            message=f"no {title} in the navigation").click()
    c.until(lambda d: d.find_elements(By.CSS_SELECTOR, "main .page:not([aria-busy]) .page-header h1")
            and c.text(".page-header h1") == title, message=f"{title} page")


def test_a_notice_goes_at_the_next_move_to_another_page(sqlite_server: Server, browser: Any) -> None:
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.until(lambda d: status(c) == "Signed in.", message="signed in")  # on the first page, which sign-in leads to
    go(c, "Datasets")
    assert status(c) == ""
    go(c, "Key-value stores")
    assert status(c) == ""

    name = "notice-" + secrets.token_hex(3)
    c.button("Create store").click()
    c.answer(name)
    c.page_ready()
    c.wait_text(".page-header h1", name)
    assert status(c) == f"The store {name} is ready."  # shown on the store's page, where creating led
    go(c, "Request queues")
    assert status(c) == ""
