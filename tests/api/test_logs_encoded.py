"""Credentials in a query string never reach the log, however their names are percent-encoded (issue 11 item 8):
the server decodes ``?%74oken=`` to ``token`` and accepts it, so the log filter must decode names too."""

from __future__ import annotations

import time

from openkvs.logs import redact
from tests.conftest import Server

# The requests go over the server's socket: the access log is the HTTP server's, which requests without a socket
# (the in-process server's client()) don't reach.


def test_redact_decodes_names_as_the_server_does() -> None:
    assert redact("/v2/x?%74oken=abc&limit=5") == "/v2/x?%74oken=REDACTED&limit=5"
    assert redact("/v2/x?a=1&tok%65n=abc") == "/v2/x?a=1&tok%65n=REDACTED"
    assert redact("/v2/x?%73ignature=abc") == "/v2/x?%73ignature=REDACTED"
    assert redact("/v2/x?signature=abc") == "/v2/x?signature=REDACTED"
    assert redact('/v2/x?token=ab"cd&x=1') == "/v2/x?token=REDACTED&x=1"  # a quote doesn't end the value
    assert redact("/v2/x?a=b%26token=c") == "/v2/x?a=b%26token=c"  # an encoded "&" is inside a's value
    assert redact("/v2/x?tokens=abc") == "/v2/x?tokens=abc"


def test_encoded_token_and_signature_are_not_logged(sqlite_server: Server) -> None:
    with sqlite_server.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "log-enc"}).json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{store}/records/a", content=b"x").status_code == 201
        url = c.get(f"/v2/key-value-stores/{store}/keys").json()["data"]["items"][0]["recordPublicUrl"]
    signature = url.rpartition("signature=")[2]
    with sqlite_server.socket_client(token="") as c:
        for name in ("%74oken", "tok%65n", "%74%6F%6B%65%6E"):
            # accepted as the token
            assert c.get(f"/v2/key-value-stores?{name}={sqlite_server.token}").status_code == 200
        assert c.get(f"/v2/key-value-stores/{store}/records/a?%73ignature={signature}").status_code == 200
        assert c.get(f"/v2/key-value-stores/{store}/records/a?signature={signature}").status_code == 200
    deadline = time.monotonic() + 10  # the access log is written after the response
    while "signature=REDACTED" not in sqlite_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = sqlite_server.log()
    assert "?%74oken=REDACTED" in log and "?%73ignature=REDACTED" in log
    assert sqlite_server.token not in log
    assert signature not in log
