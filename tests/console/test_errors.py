"""The API's refusals in the console: a revoked token sends the user back to sign in with the API's message, and
the rate limit's 429 is waited out (Retry-After) and retried, so the page still loads whole."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By

from tests.conftest import Server
from tests.console.console import Console


def test_a_revoked_token_returns_to_sign_in(sqlite_server: Server, browser: Any) -> None:
    token = sqlite_server.new_user("carol-" + secrets.token_hex(2))
    c = Console(browser, sqlite_server.url)
    c.sign_in(token)
    c.find("a.brand")
    sqlite_server.cli("tokens", "revoke", token)

    def back_at_sign_in(d: Any) -> bool:
        if d.find_elements(By.ID, "token"):
            return True
        d.refresh()  # what the user does next: the page asks the API again (running servers drop the token within seconds)
        return False

    c.until(back_at_sign_in, timeout=60, poll=1, message="still signed in with a revoked token")
    c.wait_text("[role=alert]", "Authentication token is not valid.")
    assert c.js("return sessionStorage.getItem('openkvs.token')") is None


def test_the_rate_limit_is_waited_out(start_server: Any, tmp_path: Path, browser: Any) -> None:
    server: Server = start_server(tmp_path, "sqlite", "--rate-limit-records-per-second", "2",
                                  "--rate-limit-store-per-second", "2", in_process=True)
    name = "busy-" + secrets.token_hex(3)
    with server.client() as api:
        api.post(f"/v2/key-value-stores?name={name}")
        for i in range(6):
            r = api.put(f"/v2/key-value-stores/~{name}/records/r{i}", content=b"x" * i, headers={"content-type": "text/plain"})
            while r.status_code == 429:  # the set-up itself meets the limit: wait as told
                time.sleep(float(r.headers.get("retry-after", "1")))
                r = api.put(f"/v2/key-value-stores/~{name}/records/r{i}", content=b"x" * i, headers={"content-type": "text/plain"})
    c = Console(browser, server.url)
    c.sign_in(server.token)
    c.open_store(name)  # the store, its grants, its keys: more than 2 requests a second to one store
    c.wait_records([f"r{i}" for i in range(6)])
    # one HEAD per key for its content type: 6 more, each waited out and retried until it answers
    c.until(lambda d: [e.text for e in c.all("table.records .content-type")] == ["text/plain"] * 6, timeout=60,
            message="content types not all loaded")
    assert "rate limit" in c.text("#status")
