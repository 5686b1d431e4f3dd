"""A client that stops sending in the middle of a request body (issue 11 item 11, slow senders): 408 after
--body-timeout, the upload dropped, the connection given back; a slow upload that keeps sending is not cut."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server

BODY_TIMEOUT = 2  # short, so the tests wait little; the slow upload sends a piece every eighth of it


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, start_server: Callable[..., Server]) -> Server:
    return start_server(
        tmp_path_factory.mktemp("body-timeout"), "sqlite", "--rate-limits", "off", "--body-timeout", str(BODY_TIMEOUT),
        in_process=True,
    )


@pytest.fixture(scope="module")
def store(srv: Server) -> str:
    with srv.client() as c:
        return c.post("/v2/key-value-stores", params={"name": "slow"}).json()["data"]["id"]


def _put_head(srv: Server, store: str, key: str, length: int) -> bytes:
    host = urlsplit(srv.url).netloc
    return (
        f"PUT /v2/key-value-stores/{store}/records/{key} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {srv.token}\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket, wait: float) -> tuple[int, dict[str, str]]:
    sock.settimeout(wait)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_stalled_upload_gets_408_and_stores_nothing(srv: Server, store: str) -> None:
    address = urlsplit(srv.url)
    with socket.create_connection((address.hostname, address.port)) as sock:
        # Taken before the bytes go: the server's deadline runs from when it got them, which is later, so the
        # answer can only come later than this plus the timeout, however slow the machine.
        started = time.monotonic()
        sock.sendall(_put_head(srv, store, "stalled", 1000) + b"x" * 10)
        status, body = _answer(sock, wait=BODY_TIMEOUT + 60)  # generous: the server's deadline, plus a busy machine
    assert (status, body["error"]["type"]) == (408, "request-timeout")
    assert time.monotonic() - started >= BODY_TIMEOUT - 0.05  # not cut before the deadline
    with srv.client() as c:
        assert c.get(f"/v2/key-value-stores/{store}/records/stalled").status_code == 404


def test_a_slow_upload_that_keeps_sending_is_stored(srv: Server, store: str) -> None:
    address = urlsplit(srv.url)
    pieces = [b"a" * 100] * 12
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(_put_head(srv, store, "slow", 1200))
        for piece in pieces:  # 3 s in all: longer than the deadline, which is per piece, not for the whole body
            sock.sendall(piece)
            time.sleep(BODY_TIMEOUT / 8)
        status, _ = _answer(sock, wait=60)
    assert status == 201
    with srv.client() as c:
        assert c.get(f"/v2/key-value-stores/{store}/records/slow").content == b"".join(pieces)
