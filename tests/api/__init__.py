"""End-to-end tests of the HTTP API over a real socket, against `python -m openkvs serve` (see tests/conftest.py).

Shared helpers live here; tests import them relatively (``from . import ...``)."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ID_RE = re.compile(r"^[a-zA-Z0-9]{17}$")


def unique(prefix: str = "s") -> str:
    """A store name no other test uses."""
    return f"{prefix}-{secrets.token_hex(5)}"


def new_store(client: httpx.Client, name: str | None = None, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a store (a fresh unique name unless given) and return its JSON object."""
    name = name or unique()
    kw: dict[str, Any] = {"json": {"schema": schema}} if schema is not None else {}
    r = client.post("/v2/key-value-stores", params={"name": name}, **kw)
    assert r.status_code == 201, r.text
    return r.json()["data"]


def assert_error(r: httpx.Response, status: int, type_: str, message: str | None = None) -> dict[str, Any]:
    """The API's error shape, with status, type and (if given) the exact message; never a stack trace."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["type"] == type_, body
    if message is not None:
        assert body["error"]["message"] == message, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]


def rec_path(store_id: str, key: str) -> str:
    return f"/v2/key-value-stores/{store_id}/records/{key}"


class RawResponse:
    """What http.client got, shaped enough like httpx.Response for assert_error."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = httpx.Headers(headers)
        self.content = body
        self.text = body.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


def raw_request(
    base_url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> RawResponse:
    """A request whose path goes on the wire exactly as given (httpx removes dot segments such as '/..')."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return RawResponse(r.status, dict(r.getheaders()), r.read())
    finally:
        conn.close()
