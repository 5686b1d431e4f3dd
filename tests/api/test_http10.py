"""An HTTP/1.0 client (ApacheBench, an nginx proxy left at its default ``proxy_http_version 1.0``) never gets a
chunked answer: RFC 9112 6.1 forbids Transfer-Encoding in a response to HTTP/1.0, and such a client reads the
chunks' framing as the body. An export, whose length is not known up front, goes out as its bytes and ends with
the connection (openkvs/cycle.py Http10Cycle); answers with a Content-Length are as for HTTP/1.1."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from openkvs.datasets import formats
from openkvs.storage.base import StorageError
from tests.api import new_store, rec_path
from tests.api.test_datasets import items_url, new_dataset
from tests.conftest import Server, make_server

ITEMS = [{"i": i, "pad": "p" * (500 + i % 300)} for i in range(4000)]  # ~3.5 MB: several pieces


def http10(url: str, method: str, path: str, headers: dict[str, str]) -> tuple[str, dict[str, str], bytes, bool]:
    """(status line, headers, body, whether the server closed) of one HTTP/1.0 request, read to the close."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"{method} {path} HTTP/1.0\r\nHost: {host}\r\n{head}\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 16):  # (b"": the server closed; a timeout raises)
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    status, *lines = top.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body, True


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, str, dict[str, str]]]:
    """A server, a dataset of ITEMS on it, and its owner's Authorization header."""
    s = make_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    try:
        with s.client() as c:
            did = new_dataset(c)["id"]
            assert c.post(items_url(did), json=ITEMS).status_code == 201
        yield s, did, {"Authorization": f"Bearer {s.token}"}
    finally:
        s.stop()


def test_http10_clients_get_exports_unchunked(served: tuple[Server, str, dict[str, str]]) -> None:
    s, did, auth = served
    with s.client() as c:
        store = new_store(c)
        assert c.put(rec_path(store["id"], "k"), content=b"hello").status_code == 201
    want = b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in ITEMS)

    status, headers, body, _ = http10(s.url, "GET", items_url(did) + "?format=jsonl", auth)
    assert status.endswith(" 200 OK") and "transfer-encoding" not in headers and "content-length" not in headers
    assert headers["connection"] == "close"
    assert body == want  # to the connection's close: no chunk framing in it

    status, headers, body, _ = http10(s.url, "GET", items_url(did) + "?format=json&desc=1",
                                      {**auth, "Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and "transfer-encoding" not in headers
    assert json.loads(gzip.decompress(body)) == ITEMS[::-1]

    status, headers, body, _ = http10(s.url, "GET", items_url(did) + "?format=csv&limit=3", auth)
    assert "transfer-encoding" not in headers and body.decode().splitlines()[1].startswith("0,")

    status, headers, body, _ = http10(s.url, "HEAD", items_url(did) + "?format=jsonl", auth)
    assert status.endswith(" 200 OK") and "transfer-encoding" not in headers and body == b""
    assert headers["x-apify-pagination-total"] == str(len(ITEMS))

    # with a length, as for HTTP/1.1
    status, headers, body, _ = http10(s.url, "GET", rec_path(store["id"], "k"), auth)
    assert (headers["content-length"], body) == ("5", b"hello") and "transfer-encoding" not in headers
    status, headers, body, _ = http10(s.url, "GET", items_url("AAAAAAAAAAAAAAAAA") + "?format=jsonl", auth)
    assert status.endswith(" 404 Not Found") and json.loads(body)["error"]["type"] == "record-not-found"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_http11_exports_stay_chunked(served: tuple[Server, str, dict[str, str]], method: str) -> None:
    s, did, auth = served
    host, port = s.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"{method} {items_url(did)}?format=jsonl&limit=10 HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: {auth['Authorization']}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    assert b"\r\ntransfer-encoding: chunked\r\n" in data.split(b"\r\n\r\n")[0].lower() + b"\r\n"


@pytest.mark.parametrize("failure", [StorageError("disk gone"), RuntimeError("a bug")])
def test_an_http10_export_cut_short_ends_with_a_reset(served: tuple[Server, str, dict[str, str]],
                                                      monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """Without chunks, the connection's end is the body's: an export that fails after its head must not end with
    the close of a complete one, but with a reset (a storage failure through the download's abort, any other
    through the server's cycle)."""
    s, did, auth = served
    calls = []
    rendered = formats.CsvRenderer.joined_rows

    def failing(self, joined, rows_of):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:  # (the first piece goes with the head)
            raise failure
        return rendered(self, joined, rows_of)

    monkeypatch.setattr(formats.CsvRenderer, "joined_rows", failing)
    with pytest.raises(ConnectionResetError):
        http10(s.url, "GET", items_url(did) + "?format=csv", auth)
    assert len(calls) == 3
