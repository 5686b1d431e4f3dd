"""The in-process server (tests/inprocess.py) answers like the process it stands in for: what the ASGI transport
skips of an HTTP server is done by hand, and its socket serves the same app and storage."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx

from tests.api import new_store, raw_request, rec_path
from tests.conftest import make_server


def test_socket_and_asgi_client_share_the_app_and_its_storage(tmp_path: Path) -> None:
    server = make_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    try:
        with server.client() as c:
            store = new_store(c)
            assert c.put(rec_path(store["id"], "k"), content=b"hello").status_code == 201
            assert c.get(rec_path(store["id"], "k")).content == b"hello"
        auth = {"Authorization": f"Bearer {server.token}"}
        r = raw_request(server.url, "GET", rec_path(store["id"], "k"), None, auth)
        assert (r.status_code, r.content) == (200, b"hello")
        assert httpx.get(server.url + rec_path(store["id"], "k"), headers=auth).content == b"hello"
        # the CLI sees the same storage too
        assert "bob" not in server.cli("grants", "list", store["id"])
    finally:
        server.stop()


def test_head_has_no_body_and_encoded_bodies_arrive_as_sent(tmp_path: Path) -> None:
    server = make_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    try:
        with server.client() as c:
            store = new_store(c)
            body = b"x" * 10_000
            stored = gzip.compress(body)
            r = c.put(rec_path(store["id"], "k"), content=stored, headers={"content-encoding": "gzip"})
            assert r.status_code == 201
            head = c.head(rec_path(store["id"], "k"))
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(len(stored))  # httpx accepts gzip
            with c.stream("GET", rec_path(store["id"], "k"), headers={"accept-encoding": "gzip"}) as r:
                raw = b"".join(r.iter_raw())
            assert r.headers["content-encoding"] == "gzip" and raw == stored
            assert c.get(rec_path(store["id"], "k"), headers={"accept-encoding": "gzip"}).content == body
    finally:
        server.stop()
