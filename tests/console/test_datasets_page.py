"""The datasets' pages in a real headless Chromium: a dataset made through the API, with an item whose key and value
hold markup, shows its count and its items as text (the planted script never runs) in columns named by its fields,
pages by offset, offers export links in every format that download without the token (the browser's own download,
and the same link fetched with no credentials), and is renamed and deleted from its page."""

from __future__ import annotations

import csv
import io
import json
import secrets
from typing import Any

import httpx

from tests.conftest import Server
from tests.console.console import IMG, Console

FORMATS = ["json", "jsonl", "csv", "html", "xlsx", "xml", "rss"]


def column(c: Console, label: str) -> list[str]:
    """The cells of one column of the items table, as the page shows them."""
    c.find("table.items")
    return [td.text for td in c.all(f"table.items tbody td[data-label='{label}']")]


def test_a_dataset_page_shows_its_items_as_text_and_exports_them(shared_server: Server, browser: Any) -> None:
    name = "dataset-" + secrets.token_hex(3)
    first = {"n": 0, "title": IMG, IMG: "planted key", "nested": {"a": [1, "x"], "b": None}}
    rest = [{"n": i, "title": f"item {i}"} for i in range(1, 55)]
    with shared_server.client() as api:
        dataset = api.post(f"/v2/datasets?name={name}").raise_for_status().json()["data"]
        api.post(f"/v2/datasets/{dataset['id']}/items", json=[first, *rest]).raise_for_status()

    c = Console(browser, shared_server.url)
    c.sign_in(shared_server.token)

    # The list: the dataset with its item count.
    c.open("#/datasets")
    c.page_ready()
    c.wait_text(".page-header h1", "Datasets")
    link, cells = c.listed(name)
    assert cells["Items"] == "55" and cells["ID"] == dataset["id"]

    # The dataset's page: the count in the header; the columns are the fields in order of first appearance.
    link.click()
    c.page_ready()
    c.wait_text(".page-header", "55 items")
    c.until(lambda d: len(column(c, "n")) == 50, message="first page")
    headers = [th.text for th in c.all("table.items thead th")]
    assert headers == ["#", "n", "title", IMG, "nested"]
    assert column(c, "n") == [str(i) for i in range(50)]
    assert column(c, "title")[:2] == [IMG, "item 1"]
    assert column(c, IMG)[:2] == ["planted key", ""]  # the second item has no such key: an empty cell
    assert column(c, "nested")[0] == '{"a":[1,"x"],"b":null}'  # nested values as compact JSON text
    assert not c.all("table.items img") and c.pwned() == 0

    # Page 2: the last 5 items, numbered on from 51.
    c.button("Next").click()
    c.until(lambda d: column(c, "n") == [str(i) for i in range(50, 55)], message="second page")
    assert column(c, "#") == [str(i) for i in range(51, 56)]
    assert not [b for b in c.all("nav.pager button") if b.text == "Next" and b.is_enabled()]
    c.button("Previous").click()
    c.until(lambda d: column(c, "n")[:1] == ["0"], message="back to the first page")
    c.shot("dataset")

    # A phone's screen: the page is no wider than the screen (a wide table scrolls in its box).
    c.check_phone_width("dataset-phone")

    # Export: a link per format, on this origin, signed, without the token; every one downloads with no credentials.
    hrefs = {a.get_attribute("data-format"): a.get_attribute("href") for a in c.all("a[data-format]")}
    assert sorted(hrefs) == sorted(FORMATS)
    for fmt, href in hrefs.items():
        assert href.startswith(shared_server.url + f"/v2/datasets/{dataset['id']}/items?")
        assert "signature=" in href and f"format={fmt}" in href and "attachment=1" in href
        assert shared_server.token not in href
        response = httpx.get(href, timeout=60)
        assert response.status_code == 200, (fmt, response.text)
        assert response.headers["content-disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO(httpx.get(hrefs["csv"], timeout=60).content.decode("utf-8-sig"))))  # a BOM first, for Excel
    assert rows[0][:3] == ["n", "title", IMG] and len(rows) == 56
    assert rows[1][:3] == ["0", IMG, "planted key"] and rows[55][:2] == ["54", "item 54"]

    # The browser's own download of the JSON export: all 55 items, as pushed.
    c.button("JSON").click()
    downloaded = json.loads(c.downloaded(f"{name}.json"))
    assert downloaded == [first, *rest]
    assert c.pwned() == 0

    # Rename, then delete the dataset.
    c.button("Rename").click()
    c.answer(name + "-renamed")
    c.wait_text(".page-header h1", name + "-renamed")
    with shared_server.client() as api:
        assert api.get(f"/v2/datasets/{dataset['id']}").json()["data"]["name"] == name + "-renamed"
    c.button("Delete dataset").click()
    c.answer()
    c.until(lambda d: d.current_url.endswith("#/datasets"), message="not back on the list")
    c.page_ready()
    c.wait_text(".page-header h1", "Datasets")
    assert not any(a.text.startswith(name) for a in c.all("a.resource-link"))
    with shared_server.client() as api:
        assert api.get(f"/v2/datasets/{dataset['id']}").status_code == 404


def test_an_empty_dataset_says_so(shared_server: Server, browser: Any) -> None:
    name = "empty-dataset-" + secrets.token_hex(3)
    with shared_server.client() as api:
        dataset = api.post(f"/v2/datasets?name={name}").raise_for_status().json()["data"]
    c = Console(browser, shared_server.url)
    c.sign_in(shared_server.token)
    c.open(f"#/datasets/{dataset['id']}")
    c.page_ready()
    c.wait_text(".page-header", "0 items")
    c.wait_text("table.items", "No items yet.")
    assert not [b for b in c.all("nav.pager button") if b.text == "Next" and b.is_enabled()]
