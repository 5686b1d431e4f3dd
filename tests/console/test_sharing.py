"""Sharing in the console: the owner grants a user access, changes and removes it, and changes generalAccess; the
other user sees exactly what the API lets them see (their own stores and those shared with them, with their
right), and nothing of another user's private stores."""

from __future__ import annotations

import secrets
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.conftest import Server
from tests.console.console import Console


def store_names(c: Console) -> list[str]:
    c.open("#/key-value-stores")
    c.page_ready()
    return [a.text for a in c.all("a.resource-link")]


def test_grants_and_what_the_other_user_sees(sqlite_server: Server, browser: Any) -> None:
    bob = sqlite_server.extra_tokens["bob"]
    private, shared = "private-" + secrets.token_hex(3), "shared-" + secrets.token_hex(3)
    with sqlite_server.client() as api:
        ids = {n: api.post(f"/v2/key-value-stores?name={n}").json()["data"]["id"] for n in (private, shared)}
        api.put(f"/v2/key-value-stores/{ids[shared]}/records/kept", content=b"x")
    c = Console(browser, sqlite_server.url)

    # Bob sees neither of alice's stores; opened by ID, the private one shows the API's refusal.
    c.sign_in(bob)
    names = store_names(c)
    assert private not in names and shared not in names
    c.open(f"#/key-value-stores/{ids[private]}")
    c.wait_text("main [role=alert]", "You do not have permission to perform this action.")
    c.button("Sign out").click()

    # Alice shares one store with bob, read only.
    c.sign_in(sqlite_server.token)
    c.open_store(shared)
    c.find("input[name=username]").send_keys("bob")
    c.button("Share").click()
    c.until(lambda d: [td.text for td in c.all("table.grants tbody td:first-child")] == ["bob"], message="no grant")
    assert Select(c.find("select[aria-label='Access of bob']")).first_selected_option.text == "READ"
    c.shot("sharing")
    with sqlite_server.client() as api:
        grants = api.get(f"/v2/key-value-stores/{ids[shared]}/grants").json()["data"]["items"]
        assert [(g["username"], g["access"]) for g in grants] == [("bob", "READ")]
    c.button("Sign out").click()

    # Bob sees the shared store (marked as alice's) and not the private one; read only: no upload, no delete.
    c.sign_in(bob)
    c.until(lambda d: shared in [a.text for a in c.all("a.resource-link")], message="shared store not listed")
    assert private not in store_names(c)
    row = next(tr for tr in c.all("table.data tbody tr") if shared in tr.text)
    assert "alice (shared with you)" in row.text
    c.open_store(shared)
    assert "read only" in c.text(".page-header")
    assert c.records() == ["kept"]
    assert not c.all(".drop-zone") and not c.all("table.records button.danger")
    assert not c.all("select[name=generalAccess]")  # the owner's controls: bob may not list grants, so none show
    c.button("Sign out").click()

    # Alice raises bob to WRITE, then opens the store to anyone with its ID, then takes bob's grant away.
    c.sign_in(sqlite_server.token)
    c.open_store(shared)
    Select(c.find("select[aria-label='Access of bob']")).select_by_value("WRITE")
    c.wait_text("#status", "bob may now read and write")
    c.page_ready()
    access = Select(c.find("select[name=generalAccess]"))
    access.select_by_value("ANYONE_WITH_ID_CAN_READ")
    c.wait_text("#status", "General access is now ANYONE_WITH_ID_CAN_READ")
    with sqlite_server.anon() as anon:
        assert anon.get(f"/v2/key-value-stores/{ids[shared]}/records/kept").content == b"x"
    c.find("table.grants").find_element(By.XPATH, ".//button[text()='Remove']").click()
    c.answer()
    c.wait_text("table.grants", "Not shared with anyone.")
    c.button("Sign out").click()

    c.sign_in(bob)
    assert shared not in store_names(c)


def test_rotating_the_signing_key_ends_old_links(sqlite_server: Server, browser: Any) -> None:
    name = "rotate-" + secrets.token_hex(3)
    with sqlite_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}")
        api.put(f"/v2/key-value-stores/~{name}/records/r", content=b"r")
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open_store(name)
    old = c.find("input[data-link=records]").get_attribute("value")
    with sqlite_server.anon() as anon:
        assert anon.get(old).status_code == 200
        c.button("New signing key").click()
        c.answer()
        c.until(lambda d: c.find("input[data-link=records]").get_attribute("value") != old, message="no new link")
        assert anon.get(old).status_code == 403
        assert anon.get(c.find("input[data-link=records]").get_attribute("value")).status_code == 200


def test_rename(sqlite_server: Server, browser: Any) -> None:
    name = "before-" + secrets.token_hex(3)
    with sqlite_server.client() as api:
        store_id = api.post(f"/v2/key-value-stores?name={name}").json()["data"]["id"]
    c = Console(browser, sqlite_server.url)
    c.sign_in(sqlite_server.token)
    c.open_store(name)
    c.button("Rename").click()
    c.answer("after-" + name)
    c.wait_text(".page-header h1", "after-" + name)
    with sqlite_server.client() as api:
        assert api.get(f"/v2/key-value-stores/{store_id}").json()["data"]["name"] == "after-" + name
    # A refused rename shows the API's own message.
    c.button("Rename").click()
    c.answer("not a valid name!")
    c.wait_text("#status .notice.error", "Store name must be 1 to 63 characters")
    assert c.text(".page-header h1") == "after-" + name


def test_the_keyboard_reaches_stores_and_records(sqlite_server: Server, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    name = "keys-" + secrets.token_hex(3)
    with sqlite_server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}")
        api.put(f"/v2/key-value-stores/~{name}/records/hello.txt", content=b"typed", headers={"content-type": "text/plain"})
    c = Console(browser, sqlite_server.url)
    c.open()
    c.find("#token").send_keys(sqlite_server.token + Keys.ENTER)  # the field has focus; Enter signs in
    c.page_ready()

    def tab_to(matches: Any) -> None:
        for _ in range(60):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            if matches(browser.switch_to.active_element):
                return
        raise AssertionError("not reachable with Tab")

    tab_to(lambda e: e.tag_name == "a" and e.text == name)
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    c.page_ready()
    c.find("table.records")
    tab_to(lambda e: e.tag_name == "button" and e.text == "hello.txt")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    c.until(lambda d: c.find(".preview pre").text == "typed", message="no preview by keyboard")
