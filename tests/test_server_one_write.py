"""One write a response (openkvs/server.py's ``_HeadWithBody``): a small record's GET leaves the server as one TCP
segment, its head and body together, where uvicorn alone sends the head and the body in two. Counted on the client's
socket by the kernel (TCP_INFO's ``tcpi_data_segs_in``: segments that carried data), over a real socket. And the
responses that have no body, or a long one, still come right: HEAD, 204, 304, a chunked ZIP download, ``Connection:
close``, a ``100 Continue`` before the request's body, two requests pipelined."""

from __future__ import annotations

import io
import json
import socket
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="TCP_INFO's layout is Linux's")

RECORD = bytes(range(256)) * 4  # 1 KiB
DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in Linux's struct tcp_info (since 4.6)


@pytest.fixture(scope="module")
def store(sqlite_server: Server) -> str:
    with sqlite_server.client() as c:
        store_id = c.post("/v2/key-value-stores", params={"name": "one-write"}).json()["data"]["id"]
        for key in ("small", "gone", *(f"zip-{i}" for i in range(3))):
            r = c.put(f"/v2/key-value-stores/{store_id}/records/{key}", content=RECORD,
                      headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 201, r.text
    return store_id


@pytest.fixture
def sock(sqlite_server: Server) -> Iterator[socket.socket]:
    s = socket.create_connection(("127.0.0.1", urlsplit(sqlite_server.url).port), timeout=30)
    yield s
    s.close()


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    assert len(info) >= DATA_SEGS_IN + 4, "a kernel older than 4.6"
    return int(struct.unpack_from("I", info, DATA_SEGS_IN)[0])


def request(srv: Server, method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {srv.token}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Reader:
    """Responses off one connection, each framed by Content-Length, chunked coding or the request (HEAD), and
    whether the first ``recv`` of each held its head and some of its body."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.first_read = b""

    def _more(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        assert chunk, "the server closed the connection"
        self.buf += chunk
        return chunk

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        self.first_read = b"" if self.buf else self._more()
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        status = int(lines[0].split()[1])
        if head_only or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            return status, headers, self._chunked()
        size = int(headers["content-length"])
        while len(self.buf) < size:
            self._more()
        body, self.buf = self.buf[:size], self.buf[size:]
        return status, headers, body

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                self._more()
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(size_line, 16)
            while len(self.buf) < size + 2:
                self._more()
            body += self.buf[:size]
            assert self.buf[size : size + 2] == b"\r\n"
            self.buf = self.buf[size + 2 :]
            if size == 0:
                return body


def get_small_three_times(srv: Server, store: str) -> None:
    with socket.create_connection(("127.0.0.1", urlsplit(srv.url).port), timeout=30) as sock:
        reader = Reader(sock)
        for _ in range(3):  # on a kept-alive connection, every response
            before = data_segments_in(sock)
            sock.sendall(request(srv, "GET", f"/v2/key-value-stores/{store}/records/small"))
            status, headers, body = reader.response()
            assert (status, body) == (200, RECORD)
            assert headers["content-length"] == "1024"
            assert data_segments_in(sock) - before == 1
            assert reader.first_read.endswith(RECORD)  # the whole response in the first read


def test_a_small_records_get_is_one_segment(sqlite_server: Server, store: str) -> None:
    get_small_three_times(sqlite_server, store)


def test_one_segment_from_openkvs_serve(start_server: Callable[..., Server], tmp_path: Path) -> None:
    """The same from an ``openkvs serve`` process: its event loop is uvloop's (the in-process server's is asyncio's),
    whose ``writelines`` is one ``writev`` of head and body."""
    srv = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    with srv.client() as c:
        store_id = c.post("/v2/key-value-stores", params={"name": "one-write"}).json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{store_id}/records/small", content=RECORD).status_code == 201
    get_small_three_times(srv, store_id)


def test_connection_close_is_one_segment_then_the_close(sqlite_server: Server, store: str,
                                                       sock: socket.socket) -> None:
    before = data_segments_in(sock)
    sock.sendall(request(sqlite_server, "GET", f"/v2/key-value-stores/{store}/records/small", "Connection: close"))
    status, headers, body = Reader(sock).response()
    assert (status, headers["connection"], body) == (200, "close", RECORD)
    assert sock.recv(1) == b""  # and the server closed the connection
    assert data_segments_in(sock) - before == 1


def test_responses_without_a_body(sqlite_server: Server, store: str, sock: socket.socket) -> None:
    """HEAD, 304 and 204 write no body (uvicorn writes none for a HEAD, b"" for the others): each head still goes
    out, once, and the connection serves the next request."""
    reader = Reader(sock)
    path = f"/v2/key-value-stores/{store}/records/small"
    sock.sendall(request(sqlite_server, "HEAD", path))
    status, headers, _ = reader.response(head_only=True)
    assert (status, headers["content-length"]) == (200, "1024")
    etag = headers["etag"]

    sock.sendall(request(sqlite_server, "GET", path, f"If-None-Match: {etag}"))
    status, headers, _ = reader.response()
    assert (status, headers["etag"]) == (304, etag)

    before = data_segments_in(sock)
    sock.sendall(request(sqlite_server, "DELETE", f"/v2/key-value-stores/{store}/records/gone"))
    assert reader.response()[0] == 204
    assert data_segments_in(sock) - before == 1

    sock.sendall(request(sqlite_server, "GET", path))
    assert reader.response()[::2] == (200, RECORD)
    assert reader.buf == b""  # (a body after the HEAD, 304 or 204 would have been read as this response's head)


def test_a_zip_download_has_its_head_with_its_first_piece(sqlite_server: Server, store: str,
                                                           sock: socket.socket) -> None:
    reader = Reader(sock)
    sock.sendall(request(sqlite_server, "GET", f"/v2/key-value-stores/{store}/records?prefix=zip-"))
    status, headers, body = reader.response()
    assert (status, headers["content-type"]) == (200, "application/zip")
    assert reader.first_read.partition(b"\r\n\r\n")[2], "the first read held only the head"
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        assert {i.filename: z.read(i) for i in z.infolist()} == {f"zip-{i}": RECORD for i in range(3)}
    sock.sendall(request(sqlite_server, "GET", f"/v2/key-value-stores/{store}/records/small"))
    assert reader.response()[::2] == (200, RECORD)  # the connection goes on after the download


def test_a_chunked_export(sqlite_server: Server, sock: socket.socket) -> None:
    """(That its head goes with its first items: tests/test_export_one_write.py, api/download.py skipping jsonl's
    empty prefix.)"""
    items = [{"n": i, "text": "x" * 100} for i in range(200)]
    with sqlite_server.client() as c:
        dataset = c.post("/v2/datasets", params={"name": "one-write"}).json()["data"]["id"]
        assert c.post(f"/v2/datasets/{dataset}/items", json=items).status_code == 201
    reader = Reader(sock)
    path = f"/v2/datasets/{dataset}/items?format=jsonl"
    sock.sendall(request(sqlite_server, "GET", path))
    status, headers, body = reader.response()
    assert (status, headers["transfer-encoding"]) == (200, "chunked")
    assert [json.loads(line) for line in body.splitlines()] == items
    sock.sendall(request(sqlite_server, "HEAD", path))  # HEAD of a response without a length: its head alone
    status, headers, _ = reader.response(head_only=True)
    assert status == 200 and "content-length" not in headers
    sock.sendall(request(sqlite_server, "GET", path + "&limit=1"))  # and the connection goes on
    assert reader.response()[::2] == (200, b'{"n":0,"text":"' + b"x" * 100 + b'"}\n')


def test_100_continue_goes_out_before_the_body(sqlite_server: Server, store: str, sock: socket.socket) -> None:
    """``100 Continue`` is written while the response has not started: never held, or the client would wait for
    it forever before sending its body."""
    path = f"/v2/key-value-stores/{store}/records/continued"
    head = request(sqlite_server, "PUT", path, "Expect: 100-continue", "Content-Type: text/plain",
                   f"Content-Length: {len(RECORD)}")
    sock.sendall(head)
    reader = Reader(sock)
    assert reader.response(head_only=True)[0] == 100
    sock.sendall(RECORD)
    assert reader.response()[0] == 201
    sock.sendall(request(sqlite_server, "GET", path))
    assert reader.response()[::2] == (200, RECORD)


def test_pipelined_requests_answered_in_order(sqlite_server: Server, store: str, sock: socket.socket) -> None:
    small = f"/v2/key-value-stores/{store}/records/small"
    sock.sendall(request(sqlite_server, "GET", small) + request(sqlite_server, "HEAD", small)
                 + request(sqlite_server, "GET", f"/v2/key-value-stores/{store}/records/none"))
    reader = Reader(sock)
    assert reader.response()[::2] == (200, RECORD)
    status, headers, _ = reader.response(head_only=True)
    assert (status, headers["content-length"]) == (200, "1024")
    status, _, body = reader.response()
    assert status == 404 and b"record-not-found" in body
