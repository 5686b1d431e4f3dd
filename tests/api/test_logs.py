"""Tokens never reach the server's log, even when sent in the query string."""

from __future__ import annotations

import time

from openkvs.logs import redact
from tests.conftest import Server

# The requests go over the server's socket: the access log is the HTTP server's, which requests without a socket
# (the in-process server's client()) don't reach.


def test_redact_keeps_the_rest_of_the_url() -> None:
    assert redact("GET /v2/x?token=abc&limit=5 HTTP/1.1") == "GET /v2/x?token=REDACTED&limit=5 HTTP/1.1"
    assert redact("/v2/x?a=1&token=abc") == "/v2/x?a=1&token=REDACTED"
    assert redact("/v2/x?mytoken=abc") == "/v2/x?mytoken=abc"


def test_query_token_is_not_logged(server: Server) -> None:
    with server.socket_client(token="") as c:
        assert c.get("/v2/key-value-stores", params={"token": server.token}).status_code == 200
        assert c.get("/v2/key-value-stores", params={"token": "okvs_wrong-token"}).status_code == 401
    deadline = time.monotonic() + 10  # the access log is written after the response
    while "token=REDACTED" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    assert "/v2/key-value-stores?token=REDACTED" in log
    assert server.token not in log
    assert "okvs_wrong-token" not in log
