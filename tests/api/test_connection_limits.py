"""Limits of the HTTP connection itself (issue 11 items 11, 15, 17), over raw sockets against a real server: the
request head's size and the time to send it, connections per client IP, a '#' in the request target, and transfer
codings other than chunked. Different tests connect from different loopback addresses (127.0.0.x) so that the
per-IP cap of one doesn't meet the connections of another."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Server

HEAD_TIMEOUT = 2
PER_IP = 30
TRUSTED_PROXY = "127.0.0.3"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, start_server: Callable[..., Server]) -> Server:
    return start_server(
        tmp_path_factory.mktemp("limits"), "sqlite", "--rate-limits", "off",
        "--header-timeout", str(HEAD_TIMEOUT), "--max-connections-per-ip", str(PER_IP),
        "--trusted-proxies", TRUSTED_PROXY,
    )


@pytest.fixture(scope="module")
def store(srv: Server) -> str:
    with srv.client() as c:
        return c.post("/v2/key-value-stores", params={"name": "limits"}).json()["data"]["id"]


def connect(srv: Server, source: str = "127.0.0.1", timeout: float = 30) -> socket.socket:
    port = urlsplit(srv.url).port
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (Content-Length framed) or of what came before the close."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def request(srv: Server, raw: bytes, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    with connect(srv, source) as sock:
        sock.sendall(raw)
        return read_response(sock)


def error_type(body: bytes) -> str:
    return json.loads(body)["error"]["type"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def record(srv: Server, store: str, key: str) -> httpx.Response:
    with srv.client() as c:
        return c.get(f"/v2/key-value-stores/{store}/records/{key}")


# -- item 11: the request head ---------------------------------------------------------------------------------------


def test_a_huge_header_is_431_before_it_is_read_whole(srv: Server) -> None:
    """16 MiB of one header value: the server answers 431 (as JSON) after the first 64 KiB or so, and its memory
    doesn't grow with what is sent (today: it buffers everything, then answers as if nothing were wrong)."""
    assert srv.proc is not None
    before = rss_kib(srv.proc.pid)
    sock = connect(srv, "127.0.0.7")
    sock.sendall(b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent, answered = send_until_answered(sock, b"a" * 65536, 16 * MIB)
    if not answered:  # today's code: nothing yet; end the head so that it answers at last
        sock.sendall(b"\r\n\r\n")
    status, headers, body = read_response(sock)
    sock.close()
    grown = rss_kib(srv.proc.pid) - before
    assert (status, error_type(body)) == (431, "request-header-fields-too-large")
    assert headers["connection"] == "close"
    assert sent < 8 * MIB, f"{sent} bytes of header sent before the answer"
    assert grown < 8 * 1024, f"server grew by {grown} KiB"


def test_headers_just_under_the_limit_are_fine(srv: Server) -> None:
    big = b"X-Big: " + b"a" * 60_000 + b"\r\n"
    status, _, body = request(srv, b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert (status, error_type(body)) == (401, "token-not-provided")  # got through to the API


def test_slow_heads_and_idle_connections_are_closed(srv: Server) -> None:
    """20 connections that send a request head a byte at a time, and 5 that send nothing: all are answered 408
    (the idle ones just closed) a little after the head timeout; today they stay open as long as they trickle."""
    slow = [connect(srv, "127.0.0.5") for _ in range(20)]
    idle = [connect(srv, "127.0.0.5") for _ in range(5)]
    for sock in slow:
        sock.sendall(b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
    ended: dict[socket.socket, bytes] = {}
    start = time.monotonic()
    while len(ended) < len(slow) + len(idle) and time.monotonic() - start < HEAD_TIMEOUT + 20:
        for sock in slow:
            if sock not in ended:
                try:
                    sock.send(b"X")  # one byte of a header name each round
                except OSError:
                    ended[sock] = b""
        readable, _, _ = select.select([s for s in slow + idle if s not in ended], [], [], 0.5)
        for sock in readable:
            try:
                ended[sock] = sock.recv(65536)
            except OSError:
                ended[sock] = b""
    elapsed = time.monotonic() - start
    for sock in slow + idle:
        sock.close()
    assert len(ended) == len(slow) + len(idle), f"{len(slow) + len(idle) - len(ended)} still open after {elapsed:.0f} s"
    answered = [ended[s] for s in slow if ended[s]]
    assert answered and all(a.startswith(b"HTTP/1.1 408 ") for a in answered), answered[:1]
    assert all(ended[s] == b"" for s in idle)


# -- item 11: connections per client IP ------------------------------------------------------------------------------


def test_connections_per_ip_are_capped_and_others_still_served(srv: Server) -> None:
    held = [connect(srv, "127.0.0.6") for _ in range(PER_IP)]
    try:
        time.sleep(0.5)  # the server has accepted them all
        status, headers, body = request(srv, b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.6")
        assert (status, error_type(body)) == (429, "rate-limit-exceeded")
        assert headers["connection"] == "close"
        # another client is served meanwhile, and so is a trusted proxy (it carries many clients)
        for source in ("127.0.0.1", TRUSTED_PROXY):
            status, _, _ = request(srv, b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n\r\n", source)
            assert status == 401, source
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10  # once they are closed, the same IP gets in again
    while True:
        status, _, _ = request(srv, b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n\r\n", "127.0.0.6")
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 401


def test_a_trusted_proxy_is_not_capped(srv: Server) -> None:
    held = [connect(srv, TRUSTED_PROXY) for _ in range(PER_IP + 5)]
    try:
        time.sleep(0.5)
        status, _, _ = request(srv, b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n\r\n", TRUSTED_PROXY)
        assert status == 401
    finally:
        for sock in held:
            sock.close()


# -- item 15: '#' in a request target --------------------------------------------------------------------------------


def test_a_fragment_in_the_request_target_is_400_and_touches_nothing(srv: Server, store: str) -> None:
    with srv.client() as c:
        assert c.put(f"/v2/key-value-stores/{store}/records/victim", content=b"original").status_code == 201
    auth = f"Authorization: Bearer {srv.token}\r\nHost: x\r\n"
    path = f"/v2/key-value-stores/{store}/records"
    put = f"PUT {path}/victim#other HTTP/1.1\r\n{auth}Content-Length: 6\r\n\r\nhacked".encode()
    status, _, body = request(srv, put)
    assert (status, error_type(body)) == (400, "invalid-input")
    assert record(srv, store, "victim").content == b"original"
    for target in (f"{path}/victim#x", f"{path}/victim?x=1#y", f"{path}/victim#"):
        status, _, body = request(srv, f"DELETE {target} HTTP/1.1\r\n{auth}\r\n".encode())
        assert (status, error_type(body)) == (400, "invalid-input"), target
    assert record(srv, store, "victim").status_code == 200


# -- item 17: transfer codings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "identity"])
def test_a_transfer_coding_other_than_chunked_is_501(srv: Server, store: str, coding: str) -> None:
    head = f"PUT /v2/key-value-stores/{store}/records/te HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
    raw = f"{head}Transfer-Encoding: {coding}\r\n\r\n1\r\nx\r\n0\r\n\r\n".encode()
    status, headers, body = request(srv, raw)
    assert (status, error_type(body)) == (501, "not-implemented")
    assert headers["connection"] == "close"
    assert record(srv, store, "te").status_code == 404


def test_plain_chunked_still_works(srv: Server, store: str) -> None:
    head = f"PUT /v2/key-value-stores/{store}/records/ch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.token}\r\n"
    status, _, _ = request(srv, f"{head}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".encode())
    assert status == 201
    assert record(srv, store, "ch").content == b"ok"


BAD_FRAMING = {
    "size not hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "negative size": b"-5\r\nhello\r\n0\r\n\r\n",
    "no CRLF after the data": b"5\r\nhelloXX0\r\n\r\n",
    "bad size after a good chunk": b"2\r\nok\r\nzz\r\n",
}


@pytest.mark.parametrize("framing", BAD_FRAMING.values(), ids=BAD_FRAMING.keys())
def test_a_chunked_body_with_bad_framing_is_400_at_once_and_stores_nothing(
    srv: Server, store: str, framing: bytes
) -> None:
    """A chunked body the parser can't read is answered 400 at once, the connection closed, nothing stored. (The
    refusal used to wait for the request's own response, which waited for a body that would never come: 408 after
    the body timeout, a minute.)"""
    auth = f"Host: x\r\nAuthorization: Bearer {srv.token}\r\nTransfer-Encoding: chunked\r\n"
    with srv.client() as c:
        dataset = c.post("/v2/datasets", params={"name": "framing"}).json()["data"]["id"]

    def no_items() -> bool:
        with srv.client() as c:
            return c.get(f"/v2/datasets/{dataset}").json()["data"]["itemCount"] == 0  # type: ignore[no-any-return]

    for head, gone in [
        (f"PUT /v2/key-value-stores/{store}/records/framing HTTP/1.1\r\n{auth}\r\n",
         lambda: record(srv, store, "framing").status_code == 404),
        (f"POST /v2/datasets/{dataset}/items HTTP/1.1\r\n{auth}Content-Type: application/json\r\n\r\n", no_items),
    ]:
        started = time.monotonic()
        with connect(srv) as sock:
            sock.sendall(head.encode() + framing)
            status, headers, body = read_response(sock, timeout=10)
        assert (status, error_type(body)) == (400, "invalid-input")
        assert headers["connection"] == "close"
        assert time.monotonic() - started < 5
        assert gone()


def test_a_chunked_body_with_bad_framing_after_a_pipelined_request(srv: Server, store: str) -> None:
    """The same behind a request whose response is still to come (both in one write): its answer, then the 400 at
    once, nothing stored."""
    auth = f"Host: x\r\nAuthorization: Bearer {srv.token}\r\n"
    first = f"GET /v2/key-value-stores/{store} HTTP/1.1\r\n{auth}\r\n"
    put = f"PUT /v2/key-value-stores/{store}/records/piped HTTP/1.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    started = time.monotonic()
    got = b""
    with connect(srv, timeout=10) as sock:
        sock.sendall((first + put).encode() + BAD_FRAMING["size not hex"])
        while chunk := sock.recv(65536):  # both answers, then the close
            got += chunk
    assert time.monotonic() - started < 5
    answers = got.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"400"], got
    head, _, body = answers[1].partition(b"\r\n\r\n")
    assert error_type(body) == "invalid-input" and b"connection: close" in head.split(b"\r\n")
    assert record(srv, store, "piped").status_code == 404


# -- a chunked body's trailer section ------------------------------------------------------------------------------


def send_until_answered(sock: socket.socket, piece: bytes, most: int) -> tuple[int, bool]:
    """Send ``piece`` again and again, up to ``most`` bytes, until the server answers (or resets): the bytes sent,
    and whether it answered before the end."""
    sock.setblocking(False)
    sent, answered = 0, False
    deadline = time.monotonic() + 60
    while sent < most and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock], [], 5)
        if readable:
            answered = True
            break
        if writable:
            try:
                sent += sock.send(piece)
            except OSError:  # reset by the server: it has answered and closed
                answered = True
                break
    sock.setblocking(True)
    return sent, answered


def closed_after_answer(sock: socket.socket) -> bool:
    """Whether the server closes the connection (the client sends nothing more): what it still sends is read."""
    sock.settimeout(30)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:  # reset: closed too
        pass
    return True


def test_a_huge_trailer_section_is_431_before_it_is_read_whole(srv: Server, store: str) -> None:
    """A chunked PUT whose trailer section (after the last chunk) is 16 MiB of one field: 431 as for a head over
    the limit, after the first 64 KiB or so, the connection closed, nothing stored. (It used to be read whole,
    held in memory, and the record stored: 201.)"""
    head = (f"PUT /v2/key-value-stores/{store}/records/trailer HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {srv.token}\r\nTransfer-Encoding: chunked\r\n\r\n")
    sock = connect(srv, "127.0.0.8")
    sock.sendall(head.encode() + b"2\r\nok\r\n0\r\nX-Big: ")
    sent, answered = send_until_answered(sock, b"a" * 65536, 16 * MIB)
    if not answered:  # (before the fix: nothing yet; end the trailers so that it answers at last)
        sock.sendall(b"\r\n\r\n")
    status, headers, body = read_response(sock)
    assert status == 431, (status, body)
    assert error_type(body) == "request-header-fields-too-large"
    assert headers["connection"] == "close"
    assert sent < 8 * MIB, f"{sent} bytes of trailer sent before the answer"
    assert closed_after_answer(sock)
    sock.close()
    assert record(srv, store, "trailer").status_code == 404


def test_many_small_trailer_fields_over_the_limit_are_431(srv: Server, store: str) -> None:
    """The trailer section's fields together, each small (as a head's are counted in all): 200 KB of them in one
    write, 431."""
    head = (f"PUT /v2/key-value-stores/{store}/records/trailers HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {srv.token}\r\nTransfer-Encoding: chunked\r\n\r\n")
    fields = "".join(f"X-T{i}: {'a' * 90}\r\n" for i in range(2000))
    with connect(srv) as sock:
        sock.sendall(f"{head}2\r\nok\r\n0\r\n{fields}\r\n".encode())
        status, headers, body = read_response(sock)
        assert status == 431, (status, body)
        assert error_type(body) == "request-header-fields-too-large"
        assert headers["connection"] == "close"
    assert record(srv, store, "trailers").status_code == 404


@pytest.mark.parametrize("size", [10, 60_000])
def test_a_trailer_under_the_limit_is_fine(srv: Server, store: str, size: int) -> None:
    """A trailer field the head announced (``Trailer:``, as curl can send one), small or just under the limit (the
    trailer section has the head's budget of its own), split across writes or not: the record is stored, and the
    connection serves the next request."""
    key = f"announced-{size}"
    head = (f"PUT /v2/key-value-stores/{store}/records/{key} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {srv.token}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n")
    raw = f"{head}2\r\nok\r\n0\r\nX-Checksum: {'a' * size}\r\n\r\n".encode()
    with connect(srv) as sock:
        cuts = [0, len(raw) - size - 10, len(raw) - size // 2, len(raw)]  # in the field's name, in its value
        for start, end in zip(cuts, cuts[1:], strict=False):
            sock.sendall(raw[start:end])
            time.sleep(0.05)
        status, headers, _ = read_response(sock)
        assert status == 201 and headers.get("connection") != "close"
        sock.sendall(b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 401
    assert record(srv, store, key).content == b"ok"


def test_keep_alive_requests_on_one_connection_are_unaffected(srv: Server) -> None:
    """Several requests on one connection, one of them split across sends: the head timer and size are per
    request, not per connection."""
    with connect(srv) as sock:
        for i in range(5):
            req = b"GET /v2/key-value-stores HTTP/1.1\r\nHost: x\r\n\r\n"
            if i == 2:
                sock.sendall(req[:10])
                time.sleep(HEAD_TIMEOUT / 4)
                sock.sendall(req[10:])
            else:
                sock.sendall(req)
            status, headers, _ = read_response(sock)
            assert status == 401 and headers.get("connection") != "close"
