"""A dataset export's head leaves with its first bytes of items: api/download.py skips empty pieces (jsonl's empty
prefix was a body message of its own, which flushed the head alone: a TCP segment more a response). Counted as in
tests/test_server_one_write.py, by the client's kernel (TCP_INFO's data segments): one a body message that has
bytes (each is a frame of the chunked coding), one for the coding's end, none for the head alone."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server
from tests.test_server_one_write import data_segments_in, request

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO's layout is Linux's")

ITEMS = [{"n": i, "text": "x" * 100} for i in range(20)]


@pytest.fixture(scope="module")
def dataset(sqlite_server: Server) -> str:
    with sqlite_server.client() as c:
        dataset_id = c.post("/v2/datasets", params={"name": "export-one-write"}).json()["data"]["id"]
        assert c.post(f"/v2/datasets/{dataset_id}/items", json=ITEMS).status_code == 201
    return str(dataset_id)


@pytest.fixture
def sock(sqlite_server: Server) -> Iterator[socket.socket]:
    s = socket.create_connection(("127.0.0.1", urlsplit(sqlite_server.url).port), timeout=30)
    yield s
    s.close()


def chunked_response(sock: socket.socket) -> tuple[bytes, list[bytes]]:
    """One chunked response off ``sock``: its head and its frames of data, as sent."""
    raw = b""
    while not raw.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed the connection"
        raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    frames = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, frames
        frames.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_an_exports_head_goes_with_its_first_items(sqlite_server: Server, dataset: str, sock: socket.socket,
                                                   fmt: str) -> None:
    for _ in range(2):  # on a kept-alive connection, each response
        before = data_segments_in(sock)
        sock.sendall(request(sqlite_server, "GET", f"/v2/datasets/{dataset}/items?format={fmt}"))
        head, frames = chunked_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and b"\r\ntransfer-encoding: chunked" in head
        body = b"".join(frames)
        if fmt == "jsonl":
            assert [json.loads(line) for line in body.splitlines()] == ITEMS
        elif fmt == "json":
            assert json.loads(body) == ITEMS
        else:
            lines = body.decode("utf-8-sig").splitlines()  # (Excel's byte order mark first)
            assert lines[0] == "n,text" and len(lines) == 1 + len(ITEMS)
        assert data_segments_in(sock) - before == len(frames) + 1  # (the head rode with the first frame)
