"""The store list shows each store's record count (with its size and modified time), in a real headless
Chromium: stores made through the API with 0, 1 and 57 records (57: more than one page of keys), and one shared by
another user; the store's page says its count in the header and follows an upload and a delete made in the page."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By

from tests.conftest import Server
from tests.console.console import Console


def cells(c: Console, name: str) -> dict[str, str]:
    """The list row of the store ``name``: its cells by column label, as the page shows them."""
    link = c.until(lambda d: next((a for a in c.all("a.resource-link") if a.text == name), False), message=f"no {name}")
    tds = link.find_element(By.XPATH, "./ancestor::tr").find_elements(By.CSS_SELECTOR, "td")
    return {td.get_attribute("data-label"): td.text for td in tds}


def test_the_store_list_shows_record_counts(shared_server: Server, browser: Any, tmp_path: Path) -> None:
    tag = secrets.token_hex(3)
    counts = {f"none-{tag}": 0, f"one-{tag}": 1, f"many-{tag}": 57}
    bob_store = f"bobs-{tag}"
    with shared_server.client() as api:
        for name, n in counts.items():
            sid = api.post("/v2/key-value-stores", params={"name": name}).raise_for_status().json()["data"]["id"]
            for i in range(n):
                api.put(f"/v2/key-value-stores/{sid}/records/r{i:02d}", content=b"12345").raise_for_status()
            if n:  # an overwrite: bytes change, the count does not
                api.put(f"/v2/key-value-stores/{sid}/records/r00", content=b"1234567890").raise_for_status()
    with shared_server.client(shared_server.extra_tokens["bob"]) as bob:
        sid = bob.post("/v2/key-value-stores", params={"name": bob_store}).raise_for_status().json()["data"]["id"]
        for key in ("a", "b"):
            bob.put(f"/v2/key-value-stores/{sid}/records/{key}", content=b"x").raise_for_status()
        bob.put(f"/v2/key-value-stores/{sid}/grants", json={"username": "alice", "access": "READ"}).raise_for_status()

    c = Console(browser, shared_server.url)
    c.sign_in(shared_server.token)
    c.open("#/key-value-stores")
    c.page_ready()
    shown = {name: cells(c, name) for name in [*counts, bob_store]}
    c.shot("store-list-counts")
    assert {name: row["Records"] for name, row in shown.items()} == {
        **{name: str(n) for name, n in counts.items()}, bob_store: "2"}
    # the size and modified time stay beside it (57 records: 56 of 5 bytes and one of 10)
    assert shown[f"many-{tag}"]["Size"] == "290 B"
    assert shown[f"none-{tag}"]["Size"] == "0 B"
    assert all(row["Modified"] for row in shown.values())
    assert "shared with you" in shown[bob_store]["Owner"]

    # Sorting by the count: its header orders the rows by it, ascending then descending.
    c.button("Records", "table.data thead").click()
    ascending = [f"none-{tag}", f"one-{tag}", bob_store, f"many-{tag}"]
    c.until(lambda d: [a.text for a in c.all("a.resource-link") if a.text in shown] == ascending, message="ascending")
    c.button("Records", "table.data thead").click()
    c.until(lambda d: [a.text for a in c.all("a.resource-link") if a.text in shown] == ascending[::-1],
            message="descending")

    # The store's page: the count in its header, following an upload and a delete made there.
    c.open_store(f"many-{tag}")
    c.wait_text(".page-header", "57 records")
    upload = tmp_path / "added.txt"
    upload.write_bytes(b"hello")
    c.find("#upload-files").send_keys(str(upload))
    c.until(lambda d: len(c.all(".uploads li.done")) == 1, message="upload did not finish")
    c.wait_text(".page-header", "58 records")
    c.click_in_row("r00", By.XPATH, ".//button[text()='Delete']")
    c.answer()
    c.wait_text(".page-header", "57 records")
    c.until(lambda d: "r00" not in c.records() and "added.txt" in c.records(), message="the list did not follow")
    c.shot("store-page-count")

    c.open_store(f"one-{tag}")
    c.wait_text(".page-header", "1 record ·")
    c.open("#/key-value-stores")
    c.page_ready()
    assert cells(c, f"many-{tag}")["Records"] == "57"


def test_the_records_page_shows_types_without_a_request_per_key(sqlite_server: Server, browser: Any) -> None:
    """The key list carries each record's content type: the page shows the types of a page of 50 keys with no
    request for any single record (it used to send one HEAD per key)."""
    name = "types-" + secrets.token_hex(3)
    types = ["application/json", "text/plain; charset=utf-8", "image/png", "application/x-planted\"<b>"]
    with sqlite_server.client() as api:
        sid = api.post("/v2/key-value-stores", params={"name": name}).raise_for_status().json()["data"]["id"]
        for i in range(60):
            api.put(f"/v2/key-value-stores/{sid}/records/k{i:02d}", content=b"x",
                    headers={"Content-Type": types[i % len(types)]}).raise_for_status()
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open_store(name)
    c.until(lambda d: len(c.records()) == 50, message="first page")
    shown = {tr.find_element(By.CSS_SELECTOR, "button.record-key").text: tr.find_element(By.CSS_SELECTOR, "span.content-type").text
             for tr in c.all("table.records tbody tr")}
    assert shown == {f"k{i:02d}": types[i % len(types)] for i in range(50)}
    assert not c.all("table.records b")  # a type is text, never markup
    fetched = c.js("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert not [url for url in fetched if "/records/" in url], fetched
