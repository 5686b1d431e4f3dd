"""A dataset's page reads its items with the API's own options, in a real headless Chromium: newest first
(``desc``), ``clean`` (no hidden #fields, no empty items; the pages still cover every stored item) and a ``view`` of
the dataset's schema (its fields as the columns); the export links carry the same choice, and download what the
table shows."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.conftest import Server
from tests.console.console import Console

SCHEMA = {
    "actorSpecification": 1,
    "fields": {"type": "object"},
    "views": {"brief": {"title": "Brief", "transformation": {"fields": ["n", "title"]}}},
}


def column(c: Console, label: str) -> list[str]:
    c.find("table.items")
    return [td.text for td in c.all(f"table.items tbody td[data-label='{label}']")]


def headers(c: Console) -> list[str]:
    return [th.text for th in c.all("table.items thead th")]


def test_desc_clean_and_a_view(sqlite_server: Server, browser: Any) -> None:
    name = "opts-" + secrets.token_hex(3)
    # 60 items: every tenth is empty, every item has a hidden field
    items = [{} if i % 10 == 9 else {"n": i, "title": f"item {i}", "#debug": f"d{i}"} for i in range(60)]
    with sqlite_server.client() as api:
        dataset = api.post("/v2/datasets", params={"name": name}, json={"schema": SCHEMA}).raise_for_status().json()["data"]
        api.post(f"/v2/datasets/{dataset['id']}/items", json=items).raise_for_status()

    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open(f"#/datasets/{dataset['id']}")
    c.page_ready()
    c.until(lambda d: len(column(c, "#")) == 50, message="first page")
    assert headers(c) == ["#", "n", "title", "#debug"]
    assert column(c, "n")[:3] == ["0", "1", "2"] and column(c, "n")[9] == ""  # the empty item: an empty row
    assert column(c, "#") == [str(i) for i in range(1, 51)]  # each item's number in the dataset

    # Newest first.
    c.find("input[name=desc]").click()
    c.until(lambda d: column(c, "n")[:2] == ["", "58"], message="newest first")  # item 59 is empty
    assert column(c, "#") == [str(i) for i in range(60, 10, -1)]  # the items' numbers, not the rows'
    c.button("Next").click()
    c.until(lambda d: column(c, "#") == [str(i) for i in range(10, 0, -1)], message="newest first, page 2")
    assert column(c, "n") == ["", *(str(i) for i in range(8, -1, -1))]  # item 9 is empty
    c.button("First").click()
    c.until(lambda d: column(c, "#")[0] == "60", message="newest first, page 1 again")
    assert [a.get_attribute("href") for a in c.all("a[data-format=json]")][0].count("desc=1") == 1

    # Clean as well: no hidden column, no empty rows; page 1 covers the newest 50 stored items (45 shown), page 2
    # the oldest 10 (9 shown), and there is no page 3.
    c.find("input[name=clean]").click()
    page1 = [str(i) for i in range(59, 9, -1) if i % 10 != 9]
    c.until(lambda d: column(c, "n") == page1, message="clean page 1")
    assert headers(c) == ["#", "n", "title"]
    c.button("Next").click()
    c.until(lambda d: column(c, "n") == [str(i) for i in range(9, -1, -1) if i % 10 != 9], message="clean page 2")
    assert not [b for b in c.all("nav.pager button") if b.text == "Next" and b.is_enabled()]
    href = c.find("a[data-format=json]").get_attribute("href")
    assert "desc=1" in href and "clean=1" in href and "signature=" in href and sqlite_server.token not in href
    exported = httpx.get(href, timeout=60).json()  # the link works signed out and holds what the table showed
    assert [x["n"] for x in exported] == [int(n) for n in page1] + [8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert all("#debug" not in x for x in exported)

    # A view of the schema: its fields are the columns; the export link names it.
    c.find("input[name=desc]").click()
    c.find("input[name=clean]").click()
    Select(c.find("select[name=view]")).select_by_visible_text("Brief")
    c.until(lambda d: headers(c) == ["#", "n", "title"] and column(c, "n")[:2] == ["0", "1"], message="the view")
    href = c.find("a[data-format=jsonl]").get_attribute("href")
    assert "view=brief" in href and "desc=" not in href and "clean=" not in href
    lines = httpx.get(href, timeout=60).text.splitlines()
    assert json.loads(lines[0]) == {"n": 0, "title": "item 0"} and len(lines) == 60
    c.shot("dataset-options")
    assert not c.all("table.items b") and browser.find_elements(By.CSS_SELECTOR, "label.check")


def test_a_dataset_without_views_offers_no_view_choice(sqlite_server: Server, browser: Any) -> None:
    with sqlite_server.client() as api:
        dataset = api.post("/v2/datasets", params={"name": "plain-" + secrets.token_hex(3)}).raise_for_status().json()["data"]
        api.post(f"/v2/datasets/{dataset['id']}/items", json=[{"a": 1}, {"a": 2}]).raise_for_status()
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open(f"#/datasets/{dataset['id']}")
    c.page_ready()
    c.until(lambda d: column(c, "a") == ["1", "2"], message="items")
    assert not c.all("select[name=view]")
    c.find("input[name=desc]").click()
    c.until(lambda d: column(c, "a") == ["2", "1"], message="newest first")
