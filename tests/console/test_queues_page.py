"""The request queues' pages in a real headless Chromium: a queue made through the API, with a request whose URL and
unique key hold markup, shows its counts and its requests as text (the planted script never runs), pages through
the API's cursor, shows only the pending requests on request, adds and deletes a request, and is renamed and
deleted from its page."""

from __future__ import annotations

import secrets
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.conftest import Server
from tests.console.console import IMG, Console

EVIL_URL = f"https://example.com/{IMG}"


def urls(c: Console) -> list[str]:
    c.find("table.requests")
    return [e.text for e in c.all("table.requests .request-url")]


def row(c: Console, url: str) -> Any:
    """The row of the request with this URL, on the first page or the next (the listing has two)."""
    first = c.until(lambda d: next((b for b in c.all("nav.pager button") if b.text == "First"), False), message="no pager")
    if first.is_enabled():
        first.click()
        c.until(lambda d: len(urls(c)) == 50, message="first page")
    for _ in range(2):
        found = [tr for tr in c.all("table.requests tbody tr") if tr.find_element(By.CSS_SELECTOR, ".request-url").text == url]
        if found:
            return found[0]
        c.button("Next").click()
        c.until(lambda d: len(urls(c)) < 50, message="second page")
    raise AssertionError(f"{url} is not listed")


def test_a_queue_page_shows_its_requests_as_text(shared_server: Server, browser: Any) -> None:
    name = "queue-" + secrets.token_hex(3)
    with shared_server.client() as api:
        queue = api.post(f"/v2/request-queues?name={name}").raise_for_status().json()["data"]
        base = f"/v2/request-queues/{queue['id']}/requests"
        api.post(base, json={"url": EVIL_URL, "uniqueKey": IMG}).raise_for_status()
        api.post(base, json={"url": "https://example.com/a", "uniqueKey": "a"}).raise_for_status()
        api.post(base, json={"url": "https://example.com/b", "uniqueKey": "b", "method": "POST",
                             "handledAt": "2026-01-02T03:04:05.000Z"}).raise_for_status()
        # 52 more: the page shows 50, the rest is on the next page of the cursor
        for i in range(0, 52, 25):
            batch = [{"url": f"https://example.com/many/{j}", "uniqueKey": f"many-{j}"} for j in range(i, min(i + 25, 52))]
            api.post(f"{base}/batch", json=batch).raise_for_status()

    c = Console(browser, shared_server.url)
    c.sign_in(shared_server.token)

    # The list: the queue with its counts (55 requests, 1 handled, 54 pending).
    c.open("#/request-queues")
    c.page_ready()
    link, cells = c.listed(name)
    assert (cells["Total"], cells["Handled"], cells["Pending"]) == ("55", "1", "54")
    assert cells["ID"] == queue["id"]

    # The queue's page: counts in the header; the requests as text, two pages of them (ordered by ID).
    link.click()
    c.page_ready()
    c.wait_text(".page-header", "55 requests: 54 pending, 1 handled")
    first = urls(c)
    assert len(first) == 50
    c.button("Next").click()
    c.until(lambda d: len(urls(c)) == 5, message="second page")
    second = urls(c)
    expected = {EVIL_URL, "https://example.com/a", "https://example.com/b"} | {f"https://example.com/many/{j}" for j in range(52)}
    assert set(first) | set(second) == expected and not set(first) & set(second)
    evil = row(c, EVIL_URL)
    assert evil.find_element(By.CSS_SELECTOR, ".unique-key").text == IMG
    assert not c.all("table.requests img")
    assert c.pwned() == 0
    handled = row(c, "https://example.com/b")
    assert handled.find_element(By.CSS_SELECTOR, "td[data-label=Method]").text == "POST"
    assert handled.find_element(By.CSS_SELECTOR, "td[data-label='Handled at']").text != "pending"
    assert row(c, "https://example.com/a").find_element(By.CSS_SELECTOR, "td[data-label='Handled at']").text == "pending"

    # Pending only: the handled one is gone, 54 in all.
    Select(c.find("select[name=filter]")).select_by_visible_text("Pending only")
    c.until(lambda d: len(urls(c)) == 50 and "https://example.com/b" not in urls(c), message="pending filter")
    c.button("Next").click()
    c.until(lambda d: len(urls(c)) == 4, message="second pending page")
    assert "https://example.com/b" not in urls(c)

    c.shot("queue")

    # A phone's screen: long URLs and keys wrap, nothing is wider than the screen.
    c.check_phone_width("queue-phone")

    # Add a request by URL: it is stored, and the counts move.
    c.find("input[name=url]").send_keys("https://example.com/added")
    c.button("Add request").click()
    c.wait_text(".page-header", "56 requests: 55 pending, 1 handled")
    with shared_server.client() as api:
        listed = api.get(base, params={"limit": 1000}).json()["data"]["items"]
    assert "https://example.com/added" in [r["url"] for r in listed]

    # Delete the planted request from the page.
    c.page_ready()
    row(c, EVIL_URL).find_element(By.CSS_SELECTOR, "button.danger").click()
    c.answer()
    c.wait_text(".page-header", "55 requests: 54 pending, 1 handled")
    with shared_server.client() as api:
        listed = api.get(base, params={"limit": 1000}).json()["data"]["items"]
    assert IMG not in [r["uniqueKey"] for r in listed] and len(listed) == 55

    # Rename, then delete the queue.
    c.button("Rename").click()
    c.answer(name + "-renamed")
    c.wait_text(".page-header h1", name + "-renamed")
    with shared_server.client() as api:
        assert api.get(f"/v2/request-queues/{queue['id']}").json()["data"]["name"] == name + "-renamed"
    c.button("Delete queue").click()
    c.answer()
    c.until(lambda d: d.current_url.endswith("#/request-queues"), message="not back on the list")
    c.page_ready()
    c.wait_text(".page-header h1", "Request queues")
    assert not any(a.text.startswith(name) for a in c.all("a.resource-link"))
    with shared_server.client() as api:
        assert api.get(f"/v2/request-queues/{queue['id']}").status_code == 404
    assert c.pwned() == 0


def test_a_queue_shared_read_only_refuses_changes_with_the_api_message(sqlite_server: Server, browser: Any) -> None:
    bob = sqlite_server.extra_tokens["bob"]
    name = "shared-queue-" + secrets.token_hex(3)
    with sqlite_server.client() as api:
        queue = api.post(f"/v2/request-queues?name={name}").raise_for_status().json()["data"]
        api.post(f"/v2/request-queues/{queue['id']}/requests", json={"url": "https://example.com/kept", "uniqueKey": "kept"}).raise_for_status()
        api.put(f"/v2/request-queues/{queue['id']}/grants", json={"username": "bob", "access": "READ"}).raise_for_status()
    c = Console(browser, sqlite_server.url)
    c.sign_in(bob)
    c.open("#/request-queues")
    c.page_ready()
    c.until(lambda d: name in [a.text for a in c.all("a.resource-link")], message="shared queue not listed")
    c.open(f"#/request-queues/{queue['id']}")
    c.page_ready()
    c.wait_text(".page-header", "shared with you by alice")
    assert "read only" not in c.text(".page-header")  # the queue object does not say, so the page does not guess
    assert "Rename" not in [b.text for b in c.all(".page-header button")]  # the owner's controls only
    c.until(lambda d: urls(c) == ["https://example.com/kept"], message="request not listed")

    # Bob may read only: the API refuses the add, and the page shows its message; nothing is added.
    c.find("input[name=url]").send_keys("https://example.com/not-allowed")
    c.button("Add request").click()
    c.wait_text("#status", "You do not have permission to perform this action.")
    with sqlite_server.client() as api:
        items = api.get(f"/v2/request-queues/{queue['id']}/requests").json()["data"]["items"]
    assert [r["url"] for r in items] == ["https://example.com/kept"]
