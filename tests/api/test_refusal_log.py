"""Requests that the HTTP protocol refuses before the app sees them (431 head too large, 408 head too slow, 429 over
the connections per IP: openkvs/server.py) get an access-log line like any other, with the token redacted."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.server_process  # reads the whole standard output of an `openkvs serve`

SECRET = "okvs_notarealtokenbutlookslikeone"


def connect(srv: Server, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", urlsplit(srv.url).port), timeout=30, source_address=(source, 0))


def answer(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def log_lines(srv: Server, clients: set[str]) -> dict[str, dict[str, Any]]:
    """The JSON access-log lines of the server's output by client IP, once ``clients`` all have one (lines are
    written in batches)."""
    deadline = time.monotonic() + 30
    while True:
        lines = [json.loads(line) for line in srv.log().splitlines() if line.startswith('{"time"')]
        by_client = {line["client"]: line for line in lines}
        if clients <= set(by_client) or time.monotonic() > deadline:
            return by_client
        time.sleep(0.1)


def test_refused_heads_and_connections_are_in_the_access_log(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    srv = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--log-format", "json",
                       "--max-header-bytes", "4096", "--header-timeout", "1", "--max-connections-per-ip", "2")
    with connect(srv, "127.0.0.21") as sock:  # 431: a head over 4 KiB
        sock.sendall(f"GET /v2/key-value-stores?token={SECRET} HTTP/1.1\r\nX-Big: {'a' * 8000}\r\n\r\n".encode())
        assert answer(sock).startswith(b"HTTP/1.1 431 ")
    with connect(srv, "127.0.0.22") as sock:  # 408: a head that never ends
        sock.sendall(f"PUT /v2/key-value-stores/s/records/k?token={SECRET} HTTP/1.1\r\nHost: x\r\n".encode())
        assert answer(sock).startswith(b"HTTP/1.1 408 ")
    held = [connect(srv, "127.0.0.23") for _ in range(2)]
    try:
        time.sleep(0.5)  # the server has accepted both
        with connect(srv, "127.0.0.23") as sock:  # 429: a third connection from the same IP
            assert answer(sock).startswith(b"HTTP/1.1 429 ")
    finally:
        for sock in held:
            sock.close()

    lines = log_lines(srv, {"127.0.0.21", "127.0.0.22", "127.0.0.23"})
    assert SECRET not in srv.log()
    big, slow, third = lines.get("127.0.0.21"), lines.get("127.0.0.22"), lines.get("127.0.0.23")
    assert big and (big["status"], big["method"], big["path"]) == (431, "GET", "/v2/key-value-stores?token=REDACTED")
    assert slow and (slow["status"], slow["method"]) == (408, "PUT"), slow
    assert slow["path"] == "/v2/key-value-stores/s/records/k?token=REDACTED" and slow["duration_ms"] >= 900
    assert third and (third["status"], third["method"], third["path"]) == (429, "-", "-"), third
    for line in (big, slow, third):
        assert line["bytes"] > 0 and line["user"] == "-" and line["request_id"], line
