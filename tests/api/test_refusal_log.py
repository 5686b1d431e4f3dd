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


def lines_of(srv: Server, client: str) -> list[dict[str, Any]]:
    return [line for line in (json.loads(text) for text in srv.log().splitlines() if text.startswith('{"time"'))
            if line["client"] == client]


def status_series(srv: Server) -> dict[str, float]:
    """The record PUTs' request counts in /metrics, by status."""
    with srv.client() as c:
        text = c.get("/metrics").text
    counts = {}
    for row in text.splitlines():
        if row.startswith("openkvs_http_requests_total{") and 'method="PUT"' in row and "/records/" in row:
            counts[row.split('status="')[1].split('"')[0]] = float(row.rsplit(" ", 1)[1])
    return counts


def test_a_request_refused_in_its_body_has_one_line_with_the_status_sent(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Refused while its body comes in, by the app (413 too large, 408 the body stalled) or by the HTTP protocol
    (400: the chunked framing broken): one access line each, with the status the client read, and the metrics
    count that status, not a 0."""
    srv = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--log-format", "json",
                       "--max-record-bytes", "1000", "--body-timeout", "1")
    with srv.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "refused"}).json()["data"]["id"]
    head = (f"PUT /v2/key-value-stores/{store}/records/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Authorization: Bearer {srv.token}\r\n")
    sent = {
        "127.0.0.41": head + "Transfer-Encoding: chunked\r\n\r\n" + "800\r\n" + "x" * 0x800 + "\r\n",  # 413
        "127.0.0.42": head + "Content-Length: 100\r\n\r\nabc",  # 408 after a second of nothing more
        "127.0.0.43": head + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nnot a chunk size\r\n",  # 400
    }
    answered = {}
    for client, request in sent.items():
        with connect(srv, client) as sock:
            sock.sendall(request.encode())
            answered[client] = int(answer(sock).split(b" ", 2)[1])
    assert answered == {"127.0.0.41": 413, "127.0.0.42": 408, "127.0.0.43": 400}

    log_lines(srv, set(sent))
    time.sleep(0.5)  # (a second line would come in the same batch or the next)
    for client, status in answered.items():
        lines = lines_of(srv, client)
        assert [(line["status"], line["method"]) for line in lines] == [(status, "PUT")], lines
        assert lines[0]["path"] == f"/v2/key-value-stores/{store}/records/k" and lines[0]["bytes"] > 0, lines
    counts = status_series(srv)
    assert "0" not in counts, counts
    assert counts["400"] == counts["408"] == counts["413"] == 1, counts


def test_a_client_gone_in_the_middle_of_its_body_has_one_line_with_status_0(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """No response was sent, so no status: 0, in the line and the metrics, as for any request whose client left
    before its answer (status 0 means exactly that); the upload is dropped."""
    srv = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--log-format", "json")
    with srv.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "gone"}).json()["data"]["id"]
    with connect(srv, "127.0.0.44") as sock:
        sock.sendall((f"PUT /v2/key-value-stores/{store}/records/k HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: Bearer {srv.token}\r\nContent-Length: 100\r\n\r\nabc").encode())
        time.sleep(0.5)  # the app is reading the body
    log_lines(srv, {"127.0.0.44"})
    time.sleep(0.5)
    lines = lines_of(srv, "127.0.0.44")
    assert [(line["status"], line["method"], line["bytes"]) for line in lines] == [(0, "PUT", 0)], lines
    assert status_series(srv) == {"0": 1}
    with srv.client() as c:
        assert c.get(f"/v2/key-value-stores/{store}/records/k").status_code == 404


def test_a_pipelined_request_refused_in_its_body_has_its_method_and_path(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Refused in its body while it waited behind another request's response (both in one write): the app never
    ran it, so its line is the protocol's, and it names the request as the others do (its head was read), the
    token redacted. (It was "-" "-".)"""
    srv = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--log-format", "json")
    with srv.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "piped"}).json()["data"]["id"]
    first = f"GET /v2/key-value-stores/{store} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n\r\n"
    put = (f"PUT /v2/key-value-stores/{store}/records/k?token={SECRET} HTTP/1.1\r\nHost: x\r\n"
           "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nnot a chunk size\r\n")
    with connect(srv, "127.0.0.45") as sock:
        sock.sendall((first + put).encode())
        got = answer(sock)
    assert [a[:3] for a in got.split(b"HTTP/1.1 ")[1:]] == [b"200", b"400"], got
    log_lines(srv, {"127.0.0.45"})
    time.sleep(0.5)  # (the second line may come in the next batch)
    lines = lines_of(srv, "127.0.0.45")
    assert [(line["status"], line["method"], line["path"]) for line in lines] == [
        (200, "GET", f"/v2/key-value-stores/{store}"),
        (400, "PUT", f"/v2/key-value-stores/{store}/records/k?token=REDACTED"),
    ], lines
    assert SECRET not in srv.log()


def one_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read whole and no further."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    assert len(body) == length, "(nothing after it yet)"
    return head


@pytest.mark.parametrize("rest", [
    b"0\r\n" + b"".join(b"X-T%d: %s\r\n" % (i, b"a" * 1000) for i in range(8)) + b"\r\n",  # trailers over 4 KiB
    b"zz\r\n",  # a chunk size that is no number
], ids=["trailers", "framing"])
def test_a_body_refused_after_its_answer_gets_no_second_answer_and_one_line(
    start_server: Callable[..., Server], tmp_path: Path, rest: bytes
) -> None:
    """The app answers without reading the body (no such store: 404); what the client sends after that is refused by the
    protocol. The client has its answer: no other follows it, the connection closes, and the log has one line."""
    srv = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--log-format", "json", "--max-header-bytes", "4096")
    source = "127.0.0.51" if rest.startswith(b"0") else "127.0.0.52"
    with connect(srv, source) as sock:
        sock.sendall(b"PUT /v2/key-value-stores/nope/records/k HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n3\r\nabc\r\n")
        assert one_response(sock).startswith(b"HTTP/1.1 404 ")
        sock.sendall(rest)
        assert answer(sock) == b""  # (the server closed the connection, having sent nothing more)
    lines = log_lines(srv, {source})
    time.sleep(1)  # (a second line would be written in the same batch or the next)
    ours = [json.loads(line) for line in srv.log().splitlines() if line.startswith('{"time"')]
    assert [(line["method"], line["status"]) for line in ours if line["client"] == source] == [("PUT", 404)]
    assert lines[source]["status"] == 404


def test_requests_the_protocol_answers_itself_are_counted_too(start_server: Callable[..., Server], tmp_path: Path) -> None:
    """A head too large (431) and a body refused while queued behind another response (400) never reach the app:
    /metrics counts them, under the route "unmatched" (none was looked for), as the access log has a line for each."""
    srv = start_server(tmp_path, "sqlite", "--rate-limits", "off", "--log-format", "json", "--max-header-bytes", "4096")
    with srv.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": "piped"}).json()["data"]["id"]
    first = f"GET /v2/key-value-stores/{store} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n\r\n"
    put = (f"PUT /v2/key-value-stores/{store}/records/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
           "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nnot a chunk size\r\n")
    with connect(srv, "127.0.0.61") as sock:  # queued behind a GET
        sock.sendall((first + put).encode())
        got = answer(sock)
    assert [a[:3] for a in got.split(b"HTTP/1.1 ")[1:]] == [b"200", b"400"], got
    with connect(srv, "127.0.0.62") as sock:
        sock.sendall(f"GET /v2/key-value-stores HTTP/1.1\r\nX-Big: {'a' * 8000}\r\n\r\n".encode())
        assert answer(sock).startswith(b"HTTP/1.1 431 ")
    log_lines(srv, {"127.0.0.61", "127.0.0.62"})
    deadline = time.monotonic() + 30
    while True:  # (counts are flushed into the registry every 0.1 s)
        with srv.client() as c:
            rows = [row for row in c.get("/metrics").text.splitlines() if row.startswith("openkvs_http_requests_total{")
                    and 'route="unmatched"' in row]
        got_counts = {(row.split('method="')[1].split('"')[0], row.split('status="')[1].split('"')[0]):
                      float(row.rsplit(" ", 1)[1]) for row in rows}
        if len(got_counts) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got_counts.get(("PUT", "400")) == 1 and got_counts.get(("GET", "431")) == 1, got_counts
