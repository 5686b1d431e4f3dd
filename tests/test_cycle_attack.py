"""openkvs's HTTP cycle (openkvs/server.py's protocol, openkvs/cycle.py's remembered header lines) under attack,
against uvicorn's own: the same app served by uvicorn's stock httptools protocol and by openkvs's, the same
requests sent to both over real sockets, pipelined on one connection, and the bytes that come back compared (the
``date`` line aside: each server has its own clock). The app writes the response a request asks for (its status,
its headers, its body's pieces, in the query string, percent-decoded, so CR, LF, NUL and any byte can reach a
header), and echoes one request header, as a handler echoes a key, a filename or an ETag: a header that would split
the response is refused by both alike, a line remembered from one response never stands in for another's, a value
one byte away from a remembered one is its own.

And against a real ``openkvs serve``: responses whose headers come from the request (an ETag, a Content-Type, a
Content-Disposition filename, a Content-Range), pipelined and alternated with values one byte apart, HEAD, 304, 206,
errors, each the response that the request gets alone on a connection of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

import anyio.from_thread
import pytest
import uvicorn
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from openkvs import cycle
from openkvs.server import HttpProtocol
from tests.conftest import Server, examples
from tests.datasets.test_c_fuzz import mutate
from tests.inprocess import QuickStopUvicorn

pytestmark = pytest.mark.server_process  # sqlite_server: a real `openkvs serve`

# -- an app that answers what the request asks for -----------------------------------------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``?s=STATUS&h=NAME:VALUE&...&b=PIECE&...&more=1&start-only=1``: the status, each header (bytes, percent-
    decoded), the body's pieces (the last one ends it unless ``more``); ``x-echo`` back as it came."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    status, headers, pieces = 200, [], []
    for part in scope["query_string"].split(b"&"):
        name, _, value = part.partition(b"=")
        raw = unquote_to_bytes(value)
        if name == b"s":
            status = int(raw)
        elif name == b"h":
            header_name, _, header_value = raw.partition(b":")
            headers.append((header_name, header_value))
        elif name == b"b":
            pieces.append(raw)
    headers += [(b"x-echo", v) for k, v in scope["headers"] if k == b"x-echo"]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if b"start-only=1" in scope["query_string"]:
        return
    for i, piece in enumerate(pieces or [b""]):
        last = i == len(pieces) - 1 or not pieces
        await send({"type": "http.response.body", "body": piece, "more_body": not last or b"more=1" in
                    scope["query_string"]})


def target(status: int = 200, headers: list[tuple[bytes, bytes]] = (), pieces: list[bytes] = (),  # type: ignore[assignment]
           extra: str = "") -> str:
    query = [f"s={status}"]
    query += ["h=" + quote_from_bytes(n + b":" + v, safe="") for n, v in headers]
    query += ["b=" + quote_from_bytes(p, safe="") for p in pieces]
    return "/?" + "&".join(query) + extra


@contextlib.asynccontextmanager
async def two_servers() -> Any:
    """(stock, ours): the app behind uvicorn's own httptools protocol and behind openkvs's, each on a port. A
    keep-alive of a second, not uvicorn's 5: every connection here sends its bytes in one write, so none is idle
    between requests, and a stock server that keeps a connection open after its last answer (a request openkvs
    refuses) ends it a second later."""
    started = []
    try:
        for protocol in (HttpToolsProtocol, HttpProtocol):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            config = uvicorn.Config(app, lifespan="off", http=protocol, ws="none", log_config=None,
                                    access_log=False, timeout_keep_alive=1)
            server = QuickStopUvicorn(config)
            task = asyncio.create_task(server.serve([sock]))
            started.append((server, task, sock))
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.01)
        yield [sock.getsockname() for _, _, sock in started]
    finally:
        for server, task, sock in started:
            server.should_exit = True
            server.stop_now.set()
            await asyncio.wait_for(task, 30)
            sock.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[list[Any]]:
    """The two servers' addresses, started once for the module in a thread of their own: the header lines ours
    remembers carry from test to test, as from one client to the next in a server that keeps running."""
    with anyio.from_thread.start_blocking_portal() as portal, portal.wrap_async_context_manager(
        two_servers()
    ) as addresses:
        yield addresses


DATE = re.compile(rb"\r\ndate: [^\r]*")


async def exchange(address: Any, data: bytes) -> bytes:
    """What a server sends back on one connection to ``data`` (sent at once), until it closes."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        return DATE.sub(b"\r\ndate: -", await asyncio.wait_for(reader.read(), 30))
    finally:
        writer.close()


def request(method: str, path: str, *headers: str, close: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers, *(["Connection: close"] if close else [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def both(servers: list[Any], *connections: bytes) -> list[tuple[bytes, bytes]]:
    """Each connection's requests sent to both servers, in turn (the remembered lines carry over): what each sent
    back."""
    stock, ours = servers

    async def run() -> list[tuple[bytes, bytes]]:
        return [(await exchange(stock, data), await exchange(ours, data)) for data in connections]

    return asyncio.run(run())


# Header values a handler may echo: CR, LF, NUL, other controls, DEL, tab, non-ASCII bytes, quotes, the separators of
# a header line; and names with a space, a colon, an upper-case letter.
VALUES = [b"v", b"v\r\nset-cookie: a=1", b"v\rx", b"v\nx", b"v\x00", b"\x00", b"v\x01", b"v\x7f", b"v\tw", b" v ",
          b"\xe9t\xe9", b"\xff\xfe", b'"etag-1"', b'"etag-2"', b"attachment; filename=\"a\r\n.txt\"", b"", b"a: b",
          b"\r\n\r\nHTTP/1.1 200 OK"]
NAMES = [b"x-a", b"X-A", b"etag", b"content-disposition", b"x a", b"x:a", b"x\r\na", b"", b"\xe9", b"x-echo"]


@pytest.mark.parametrize("value", VALUES)
def test_an_echoed_value_as_uvicorn_sends_it(value: bytes, servers: list[Any]) -> None:
    """A value a client chose (echoed from its header, or decoded from its path): clean, it is sent as it is; with
    a byte that would end the line, refused as uvicorn refuses it (the connection closed, nothing of that
    response sent), and the next connection is served."""
    clean = request("GET", target(200, [(b"content-length", b"2")], [b"ok"]), close=True)
    bad = request("GET", target(200, [(b"content-length", b"2"), (b"x-test", value)], [b"ok"]), close=True)
    results = both(servers, clean, bad, bad, clean)  # the bad one twice: it is never remembered as clean
    for stock, ours in results:
        assert ours == stock
    assert results[0][0].startswith(b"HTTP/1.1 200 OK\r\n") and results[3][0] == results[0][0]
    if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", value):
        assert results[1][1] == b""
    else:
        assert b"\r\nx-test: " + value + b"\r\n" in results[1][1]


@pytest.mark.parametrize("name", NAMES)
def test_a_header_name_as_uvicorn_sends_it(name: str, servers: list[Any]) -> None:
    data = request("GET", target(200, [(name, b"v"), (b"content-length", b"0")]), close=True)
    for stock, ours in both(servers, data, data):
        assert ours == stock


def test_values_one_byte_apart_are_each_their_own(servers: list[Any]) -> None:
    """An ETag (say) remembered, then one a byte away, alternately, pipelined on one connection: each response
    carries its own request's value, as uvicorn sends it."""
    etags = [b'"a-1"', b'"a-2"', b'"a-1"', b'"b-1"', b'"a-1 "', b'"a-1"', b'"A-1"']
    data = b"".join(request("GET", target(200, [(b"etag", e), (b"content-length", b"1")], [b"x"])) for e in etags)
    data += request("GET", target(200, [(b"content-length", b"0")]), close=True)
    for stock, ours in both(servers, data, data):
        assert ours == stock
        assert re.findall(rb"\r\netag: ([^\r]*)\r\n", ours) == etags


def test_a_client_header_echoed(servers: list[Any]) -> None:
    """``x-echo`` as the client sent it (what httptools lets through: tab, bytes past ASCII), alternating with
    values one byte apart, pipelined; and one httptools refuses (a CR), answered 400 by openkvs's protocol."""
    values = ["abc", "abd", "abc", "a\tb", "\xe9\xff", "abc"]
    data = b"".join(request("GET", target(200, [(b"content-length", b"0")]), f"X-Echo: {v}") for v in values)
    data += request("GET", "/?s=204", close=True)
    for stock, ours in both(servers, data, data):
        assert ours == stock
        assert re.findall(rb"\r\nx-echo: ([^\r]*)\r\n", ours) == [v.encode("latin-1") for v in values]
    ((_, refused),) = both(servers, b"GET /?s=200 HTTP/1.1\r\nHost: x\r\nX-Echo: a\rb\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400 ") and b"x-echo" not in refused


# A response's framing as an app may set it, right or wrong: the cases where the cycle takes uvicorn's path and where
# it takes its own.
FRAMINGS = {
    "length": ([(b"content-length", b"3")], [b"abc"], ""),
    "length, pieces": ([(b"content-length", b"3")], [b"a", b"", b"bc"], ""),
    "length, odd forms": ([(b"content-length", b" 3")], [b"abc"], ""),
    "length, plus": ([(b"content-length", b"+3")], [b"abc"], ""),
    "length, zero-padded": ([(b"content-length", b"003")], [b"abc"], ""),
    "length, two": ([(b"content-length", b"3"), (b"Content-Length", b"5")], [b"abc"], ""),
    "length, long body": ([(b"content-length", b"2")], [b"abc"], ""),
    "length, short body": ([(b"content-length", b"4")], [b"abc"], ""),
    "length, not a number": ([(b"content-length", b"x")], [b"abc"], ""),
    "chunked": ([], [b"abc", b"de"], ""),
    "chunked, named": ([(b"transfer-encoding", b"chunked")], [b"abc"], ""),
    "chunked and a length": ([(b"Transfer-Encoding", b"Chunked"), (b"content-length", b"3")], [b"abc"], ""),
    "connection close": ([(b"content-length", b"1"), (b"connection", b"Close")], [b"x"], ""),
    "no end": ([(b"content-length", b"1")], [b"x"], "&more=1"),
    "start only": ([(b"content-length", b"1")], [], "&start-only=1"),
}


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_framing_and_keep_alive_after_it(framing: str, method: str, servers: list[Any]) -> None:
    """Each framing, then a plain response on the same connection (kept alive after an error or not, as uvicorn
    does); pipelined, and twice (the second with the lines remembered)."""
    headers, pieces, extra = FRAMINGS[framing]
    data = request(method, target(200, headers, pieces, extra))
    if framing not in ("no end", "start only"):  # (those wait for the app: nothing after them)
        data += request("GET", target(200, [(b"content-length", b"2")], [b"ok"]), close=True)
    for stock, ours in (both(servers, data, data) if framing not in ("no end", "start only") else []):
        assert ours == stock


@pytest.mark.parametrize("status", [200, 204, 206, 304, 404, 500])
def test_bodyless_statuses(status: int, servers: list[Any]) -> None:
    data = request("GET", target(status, [(b"etag", b'"e"')])) + request("HEAD", target(status)) + request(
        "GET", target(200, [(b"content-length", b"2")], [b"ok"]), close=True)
    for stock, ours in both(servers, data, data):
        assert ours == stock


HEADERS = st.lists(st.tuples(st.sampled_from(NAMES[:4] + [b"x-b", b"content-length", b"transfer-encoding",
                                                            b"connection"]),
                             st.sampled_from(VALUES[:2] + VALUES[10:14] + [b"1", b"2", b"chunked", b"close",
                                                                          b"keep-alive"])),
                   max_size=4)
RESPONSES = st.tuples(st.sampled_from(["GET", "HEAD"]), st.sampled_from([200, 201, 204, 304, 404]), HEADERS,
                      st.lists(st.sampled_from([b"", b"x", b"ab"]), max_size=3))


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RESPONSES, min_size=1, max_size=6))
@example([("GET", 200, [(b"etag", b'"etag-1"'), (b"content-length", b"1")], [b"x"]),
          ("GET", 200, [(b"etag", b'"etag-2"'), (b"content-length", b"2")], [b"ab"])])
def test_any_sequence_of_responses(servers: list[Any], responses: list[Any]) -> None:
    """Responses drawn from headers right and wrong, pipelined on one connection: byte for byte uvicorn's."""
    data = b"".join(request(method, target(status, headers, pieces)) for method, status, headers, pieces in responses)
    data += request("GET", target(200, [(b"content-length", b"0")]), close=True)
    for stock, ours in both(servers, data):
        assert ours == stock


# -- a real openkvs serve ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(sqlite_server: Server) -> str:
    """A store of records whose keys, content types and bodies are a byte apart."""
    with sqlite_server.client() as c:
        store_id = c.post("/v2/key-value-stores", params={"name": "cycle-attack"}).json()["data"]["id"]
        for key, ctype, body in RECORDS:
            r = c.put(f"/v2/key-value-stores/{store_id}/records/{key}", content=body, headers={"Content-Type": ctype.encode("latin-1")})
            assert r.status_code == 201, r.text
    return store_id


RECORDS = [
    ("a1", "text/plain; x=1", b"first record"),
    ("a2", "text/plain; x=2", b"first recorc"),
    ("a1.txt", "text/plain; x=\xe9", b"third"),
    ("A1", "application/x-\xff\tz", b"fourth record, longer" * 50),
    ("big", "application/octet-stream", bytes(range(256)) * 1024),  # streamed: more than one piece
]


def live_request(srv: Server, method: str, path: str, *headers: str, close: bool = False) -> bytes:
    return request(method, path, f"Authorization: Bearer {srv.token}", *headers, close=close)


def split_responses(data: bytes, methods: list[str]) -> list[tuple[str, list[tuple[str, str]], bytes]]:
    """The responses in ``data``, one per request method: status line, headers in order, body (by Content-Length,
    chunked coding, or none for HEAD, 204 and 304)."""
    out = []
    for method in methods:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, (method, head)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(line.split(": ", 1)) for line in lines]
        names = {n for n, _ in headers}
        body = b""
        if method == "HEAD" or status.split()[1] in ("204", "304"):
            pass
        elif "transfer-encoding" in names:
            while True:
                size, _, data = data.partition(b"\r\n")
                n = int(size, 16)
                body, data = body + data[:n], data[n + 2 :]
                if not n:
                    break
        else:
            n = int(dict(headers)["content-length"])  # type: ignore[arg-type]
            body, data = data[:n], data[n:]
        out.append((status, headers, body))  # type: ignore[arg-type]
    assert data == b"", data[:200]
    return out


VARYING = {"date", "x-request-id"}  # new on every response


def alone(srv: Server, method: str, path: str, *headers: str) -> Any:
    """The response to a request on a connection of its own (its varying headers aside)."""
    port = urlsplit(srv.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(live_request(srv, method, path, *headers, close=True))
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    ((status, heads, body),) = split_responses(data, [method])
    return status, [h for h in heads if h[0] not in VARYING and h != ("connection", "close")], body


def live_cases(store: str) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    base = f"/v2/key-value-stores/{store}/records"
    for key, _, _ in RECORDS:
        yield "GET", f"{base}/{key}", ()
        yield "HEAD", f"{base}/{key}", ()
        yield "GET", f"{base}/{key}?attachment=1", ()
        yield "GET", f"{base}/{key}", ("Range: bytes=1-3",)
        yield "GET", f"{base}/{key}", ("Range: bytes=9999999-",)
        yield "GET", f"{base}/{key}", ("Accept-Encoding: gzip",)
    yield "GET", f"{base}/missing", ()
    yield "GET", f"{base}/a%0A1", ()
    yield "GET", "/v2/key-value-stores/nosuchstore/records/a1", ()


def test_pipelined_responses_are_each_their_requests(sqlite_server: Server, store: str) -> None:
    """Every case pipelined on one connection, in an order where neighbours differ by a byte (ETag, type, key),
    twice over: each response is the one its request gets alone (HEAD, 304, 206, 416, 404, 400 among them), and
    the connection is kept alive through the errors."""
    cases = list(live_cases(store))
    etags = {}
    for method, path, headers in cases:
        status, heads, _ = alone(sqlite_server, method, path, *headers)
        if status.startswith("HTTP/1.1 200") and method == "GET" and "?" not in path:
            etags[path] = dict(heads)["etag"]
    # 304s: If-None-Match with the record's own ETag, and with the neighbour's (a 200)
    paths = list(etags)
    cases += [("GET", p, (f"If-None-Match: {etags[p]}",)) for p in paths]
    cases += [("GET", p, (f"If-None-Match: {etags[q]}",)) for p, q in zip(paths, paths[1:] + paths[:1], strict=True)]
    expected = [alone(sqlite_server, m, p, *h) for m, p, h in cases]
    assert {s.split()[1] for s, _, _ in expected} >= {"200", "206", "304", "404", "416", "400"}
    order = cases * 2
    data = b"".join(live_request(sqlite_server, m, p, *h) for m, p, h in order)
    data += live_request(sqlite_server, "GET", f"/v2/key-value-stores/{store}/records/a1", close=True)
    port = urlsplit(sqlite_server.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(1 << 20):
            got += chunk
    responses = split_responses(got, [m for m, _, _ in order] + ["GET"])
    ids = [dict(h)["x-request-id"] for _, h, _ in responses]
    assert len(set(ids)) == len(ids)  # each its own
    for i, ((status, heads, body), want) in enumerate(zip(responses, expected * 2, strict=False)):
        got = (status, [h for h in heads if h[0] not in VARYING], body)
        assert got[:2] == want[:2], (i, order[i], set(got[1]) ^ set(want[1]))
        assert got == want, (i, order[i])


def test_a_content_type_a_byte_apart(sqlite_server: Server, store: str) -> None:
    """Records whose Content-Type (the client's, stored and sent back) differ by a byte, read alternately on one
    connection many times (past the remembered lines' bound): each record's own."""
    base = f"/v2/key-value-stores/{store}/records"
    rounds = cycle.LINES_KEPT // 2 + 10
    keys = ["a1", "a2", "a1.txt"]
    data = b"".join(live_request(sqlite_server, "GET", f"{base}/{k}") for _ in range(rounds) for k in keys)
    data += live_request(sqlite_server, "GET", f"{base}/a1", close=True)
    port = urlsplit(sqlite_server.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(1 << 20):
            got += chunk
    want = {key: (ctype, body) for key, ctype, body in RECORDS}
    order = keys * rounds + ["a1"]
    for key, (status, heads, body) in zip(order, split_responses(got, ["GET"] * len(order)), strict=True):
        assert status == "HTTP/1.1 200 OK" and (dict(heads)["content-type"], body) == want[key]


REQUEST_FORMS = {
    "HTTP/1.0": b"GET /?s=200&h=content-length%3A2&b=ok HTTP/1.0\r\nHost: x\r\n\r\n",
    "HTTP/1.0 kept alive": b"GET /?s=200&h=content-length%3A2&b=ok HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    + b"GET /?s=200 HTTP/1.0\r\n\r\n",
    "HTTP/1.0 chunked answer": b"GET /?s=200&b=ab&b=c HTTP/1.0\r\n\r\n",
    "100-continue": b"PUT /?s=201&h=content-length%3A0 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    + b"Content-Length: 3\r\n\r\nabc" + request("GET", "/?s=204", close=True),
    "chunked request": b"POST /?s=200&h=content-length%3A1&b=x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"3\r\nabc\r\n0\r\n\r\n" + request("HEAD", "/?s=200&h=etag%3Ae", close=True),
    "HEADs pipelined": request("HEAD", target(200, [(b"content-length", b"5")])) * 3 + request(
        "HEAD", target(200, [(b"content-length", b"5")], [b"hello"]), close=True),
    "an error, then more": request("GET", target(200, [(b"content-length", b"1")], [b"xy"]))
    + request("GET", "/?s=204", close=True),
    "keep-alive, then close by the app": request("GET", target(200, [(b"content-length", b"0"),
                                                                   (b"connection", b"close")]))
    + request("GET", "/?s=204", close=True),
}


@pytest.mark.parametrize("form", list(REQUEST_FORMS))
def test_request_forms(form: str, servers: list[Any]) -> None:
    """HTTP/1.0 (closed after the response unless kept alive; an answer without a length is its bytes to the
    close, not chunked: cycle.py Http10Cycle), 100 Continue, a
    chunked request body, HEADs pipelined, an error then another request, the app closing: uvicorn's bytes."""
    data = REQUEST_FORMS[form]
    for stock, ours in both(servers, data, data):
        if form == "HTTP/1.0 chunked answer":  # uvicorn chunks it, which RFC 9112 6.1 forbids for HTTP/1.0:
            head, _, body = stock.partition(b"\r\n\r\n")  # ours is its bytes, ended by the close
            assert body == b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
            stock = head.replace(b"\r\ntransfer-encoding: chunked", b"") + b"\r\n\r\nabc"
            assert stock.count(b"transfer-encoding") == 0
        assert ours == stock


@pytest.mark.parametrize("valid", [1, 2, 3])
@pytest.mark.parametrize("bad", [b"\x00\x01 garbage\r\n\r\n", b"GET /#x HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"])
def test_what_is_not_http_after_requests_in_the_same_write(valid: int, bad: bytes, servers: list[Any]) -> None:
    """Requests, then what is refused (not HTTP, a '#' in the target, a transfer coding not implemented), in one
    write: each request answered as uvicorn answers it alone, then the refusal (openkvs's 400 or 501), then the
    connection closed. (uvicorn's own protocol writes its 400 at once and closes: the answers to the requests
    before it are lost.)"""
    requests = [request("GET", target(200, [(b"content-length", b"3"), (b"x-n", b"%d" % i)], [b"abc"]))
                for i in range(valid)]
    results = both(servers, *[r + request("GET", "/?s=204", close=True) for r in requests], b"".join(requests) + bad)
    answers = [stock.rpartition(b"HTTP/1.1 204 ")[0] for stock, _ in results[:valid]]
    ours = results[valid][1]
    assert ours.startswith(b"".join(answers)), ours
    status = b"501" if b"gzip" in bad else b"400"
    assert ours[len(b"".join(answers)) :].startswith(b"HTTP/1.1 " + status + b" "), ours


def test_a_clients_request_id_is_not_sent_back(sqlite_server: Server, store: str) -> None:
    """X-Request-Id from a client that is no trusted proxy: each response carries the server's own id, never the
    client's (one byte apart from the one before, or with a tab or bytes past ASCII), pipelined."""
    base = f"/v2/key-value-stores/{store}/records/a1"
    sent = ["abc-1", "abc-2", "abc-1", "a\tb", "\xe9\xff", "x" * 200]
    data = b"".join(live_request(sqlite_server, "GET", base, f"X-Request-Id: {v}") for v in sent)
    data += live_request(sqlite_server, "GET", base, close=True)
    port = urlsplit(sqlite_server.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(1 << 20):
            got += chunk
    ids = [dict(h)["x-request-id"] for _, h, _ in split_responses(got, ["GET"] * (len(sent) + 1))]
    assert len(set(ids)) == len(ids) and not set(ids) & set(sent)
    assert all(re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", i) for i in ids), ids


# -- damaged request streams ---------------------------------------------------------------------------------------


async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 with its method and path in headers and a body of its own length: a response any request may get."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b"ok " + scope["raw_path"][:50]
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-length", b"%d" % len(body)), (b"x-method", scope["method"].encode()),
        (b"x-path", scope["raw_path"])]})
    await send({"type": "http.response.body", "body": body})


def responses_in(data: bytes) -> int:
    """How many whole responses ``data`` holds, each framed by its Content-Length (none after a HEAD's, a 1xx's
    or a 204's or 304's); fails on anything else, a response cut short among them."""
    n = 0
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep and re.fullmatch(rb"HTTP/1\.1 [1-5]\d\d [^\r\n]*(\r\n[a-z0-9-]+: [^\r\n]*)*", head), head
        status = int(head[9:12])
        if status == 100:
            continue
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        if fields.get(b"x-method") != b"HEAD" and status not in (204, 304):
            length = int(fields[b"content-length"])
            assert len(data) >= length, (head, data)
            data = data[length:]
        n += 1
    return n


SAMPLE_REQUESTS = [
    b"GET /a?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET /e HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
]


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(SAMPLE_REQUESTS), min_size=1, max_size=5), st.randoms(use_true_random=False),
       st.booleans())
def test_damaged_request_streams(requests: list[bytes], rng: Any, at_once: bool) -> None:
    """Pipelined requests damaged byte by byte (tests/datasets/test_c_fuzz.py's mutations), sent at once or a few
    bytes at a time: what comes back is whole responses, one after another (the app's, then maybe one refusal),
    never one cut short or two mixed; no error in the server; and the server answers the next connection."""
    data = mutate(rng, b"".join(requests))

    async def run() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(plain_app, lifespan="off", http=HttpProtocol, ws="none", log_config=None,
                                access_log=False, timeout_keep_alive=1)
        server = QuickStopUvicorn(config)
        task = asyncio.create_task(server.serve([sock]))
        try:
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            if at_once:
                writer.write(data)
            else:
                for i in range(0, len(data), 7):
                    writer.write(data[i : i + 7])
                    await writer.drain()
            got = b""
            # until it closes, or waits for more (a body, a head's end); or resets: a server that closes after a
            # refusal with bytes of ours still unread makes its kernel send a reset (TCP), which may reach us first
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                while chunk := await asyncio.wait_for(reader.read(1 << 16), 3):
                    got += chunk
            writer.close()
            responses_in(got)
            assert await exchange(sock.getsockname(), request("GET", "/z", close=True)) != b""
        finally:
            server.should_exit = True
            server.stop_now.set()
            await asyncio.wait_for(task, 30)
            sock.close()

    errors_logged: list[Any] = []
    handler = _Collect(errors_logged)
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio", "openkvs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        asyncio.run(run())
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert not errors_logged, [r.getMessage() for r in errors_logged]


class _Collect:
    """A logging handler that keeps the records at ERROR and above."""

    level = 40

    def __init__(self, into: list[Any]) -> None:
        self.into = into

    def handle(self, record: Any) -> None:
        if record.levelno >= self.level:
            self.into.append(record)
