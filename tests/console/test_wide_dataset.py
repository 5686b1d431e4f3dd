"""A wide dataset (40 fields of long values) in a real headless Chromium: its items table scrolls sideways in its
own box, whose scrollbar is on screen (not below 50 rows), while the header row and the # column stay in view; the
page itself never gets wider than the window, and the box scrolls with the keyboard too."""

from __future__ import annotations

import secrets
from typing import Any

from selenium.webdriver.common.keys import Keys

from tests.conftest import Server
from tests.console.console import Console

FIELDS = [f"field_{i:02d}" for i in range(40)]


def box(c: Console, css: str) -> dict[str, float]:
    return c.js("const r = document.querySelector(arguments[0]).getBoundingClientRect();"
                " return {top: r.top, left: r.left, bottom: r.bottom, right: r.right};", css)


def test_a_wide_dataset_scrolls_in_its_box(sqlite_server: Server, browser: Any) -> None:
    items = [{f: f"value {n} of {f} " + "x" * 30 for f in FIELDS} for n in range(50)]
    with sqlite_server.client() as api:
        dataset = api.post("/v2/datasets", params={"name": "wide-" + secrets.token_hex(3)}).raise_for_status().json()["data"]
        api.post(f"/v2/datasets/{dataset['id']}/items", json=items).raise_for_status()
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open(f"#/datasets/{dataset['id']}")
    c.page_ready()
    c.until(lambda d: len(c.all("table.items tbody tr")) == 50, message="items")
    holder = ".items-holder"
    c.js("document.querySelector(arguments[0]).scrollIntoView()", holder)

    # The box scrolls sideways; the page does not.
    assert c.js("const h = document.querySelector(arguments[0]); return h.scrollWidth > 2 * h.clientWidth", holder)
    assert c.js("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # The box fits the window, so its horizontal scrollbar is on screen.
    assert box(c, holder)["bottom"] <= c.js("return window.innerHeight") + 1

    # Scrolled right and down: the header row stays at the top of the box, the # column at its left.
    c.js("const h = document.querySelector(arguments[0]); h.scrollLeft = 3000; h.scrollTop = 800;", holder)
    c.until(lambda d: c.js("return document.querySelector(arguments[0]).scrollLeft", holder) > 0, message="scrolled")
    outer = box(c, holder)
    head = box(c, "table.items thead th:nth-child(20)")
    number = box(c, "table.items tbody tr:nth-child(30) td:first-child")
    assert abs(head["top"] - outer["top"]) <= 2, (head, outer)
    assert abs(number["left"] - outer["left"]) <= 2, (number, outer)
    c.shot("wide-dataset")

    # The keyboard scrolls it as well (the box takes the focus).
    c.js("const h = document.querySelector(arguments[0]); h.scrollLeft = 0;", holder)
    c.find(holder).send_keys(Keys.ARROW_RIGHT * 5)
    c.until(lambda d: c.js("return document.querySelector(arguments[0]).scrollLeft", holder) > 0, message="keys")
