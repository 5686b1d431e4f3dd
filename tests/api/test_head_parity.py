"""HEAD answers what GET answers, without the body (RFC 9110 9.3.2, API.md 4.6 and 8), on every GET route: the
same status and the same headers on the wire (but Date and X-Request-Id, which name the moment and the request),
errors included (404, 401, 403, 400, 405, 416), and the connection stays usable: a GET read right after the HEAD on
the same kept-alive connection parses from the first byte after the HEAD's head (a HEAD that sent any byte of a
body, or the last chunk of an empty chunked one, would shift it). One module per backend (shared_server)."""

from __future__ import annotations

import gzip
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import TLS, Server, make_server

from . import unique

VARYING = {"date", "x-request-id"}  # (the moment and the request, not the resource)
TEXT = b"hello, head" * 3
BIG = os.urandom(2_500_000)  # past inline_max (64 KiB) and a read's piece (1 MiB): read from a file or the bucket, streamed
GZ = gzip.compress(b"compressible " * 250_000)  # decoded, more than a piece: streamed as it is decoded
HUGE = gzip.compress(b"z" * 17_000_000)  # a decoded range past records.DECODE_SKIP_FREE: sent as a download


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # lowercased names, sorted, VARYING left out
    body: bytes


class Conn:
    """One kept-alive HTTP/1.1 connection and everything read from it in one buffer: a response is parsed from the
    buffer's start, so a stray byte after a HEAD's head would be the next response's first."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.netloc = parts.netloc
        sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        if parts.scheme == "https":
            sock = TLS.wrap_socket(sock, server_hostname=parts.hostname)
        self.sock = sock
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed; read so far: {self.buf[:200]!r}")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        return self._take(end + 2)[:-2]

    def send(self, method: str, target: str, headers: dict[str, str]) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def ask(self, method: str, target: str, headers: dict[str, str]) -> Answer:
        self.send(method, target, headers)
        return self.read(method, target)

    def read(self, method: str, target: str) -> Answer:
        """The next response on the connection, to a request of ``method``."""
        status_line = self._line()
        assert status_line.startswith(b"HTTP/1.1 "), status_line[:200]
        status = int(status_line.split()[1])
        raw: list[tuple[str, str]] = []
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            raw.append((name.strip().lower(), value.strip()))
        fields = dict(raw)
        body = b""
        if method == "HEAD" or status in (204, 304):
            pass
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while size := int(self._line().split(b";")[0], 16):
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            while self._line():  # trailers, then the empty line
                pass
        elif "content-length" in fields:
            body = self._take(int(fields["content-length"]))
        else:
            raise AssertionError(f"{method} {target}: no framing in {raw}")
        return Answer(status, sorted((k, v) for k, v in raw if k not in VARYING), body)


@dataclass
class Case:
    path: str  # with {store}, {dataset}, {queue}, {request}, {etag}
    headers: dict[str, str]
    status: int
    token: str = "alice"  # "alice", "bob", "" (none) or "bad"
    volatile: frozenset[str] = frozenset()  # headers whose value may change between two reads (say why at the case)


GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}
R = "/v2/key-value-stores/{store}/records"
# The signed public URLs in a store's or dataset's object (keysPublicUrl, recordsPublicUrl, itemsPublicUrl) are made
# for each answer, with the moment in them, and their HMAC's text is not of one length: two GETs in a row may differ
# in Content-Length by a few bytes, so a HEAD's may differ from its neighbour GET's the same way.
SIGNED_URLS = frozenset({"content-length"})
CASES: dict[str, Case] = {
    # key-value stores
    "stores-list": Case("/v2/key-value-stores?limit=5", {}, 200, volatile=SIGNED_URLS),
    "store-get": Case("/v2/key-value-stores/{store}", {}, 200, volatile=SIGNED_URLS),
    "record-plain": Case(R + "/plain", {}, 200),
    "record-attachment": Case(R + "/plain?attachment=1", {}, 200),
    "record-big": Case(R + "/big", {}, 200),
    "record-gz-accepted": Case(R + "/gz", GZIP, 200),
    "record-gz-decoded": Case(R + "/gz", IDENTITY, 200),
    "record-gz-no-accept-encoding": Case(R + "/gz", {}, 200),
    "record-range": Case(R + "/plain", {"Range": "bytes=2-5"}, 206),
    "record-big-range": Case(R + "/big", {"Range": "bytes=100-200000"}, 206),
    "record-gz-decoded-range": Case(R + "/gz", {"Range": "bytes=-10", **IDENTITY}, 206),
    "record-huge-decoded-far-range": Case(R + "/huge", {"Range": "bytes=16900000-16900099"}, 206),
    "record-range-unsatisfiable": Case(R + "/plain", {"Range": "bytes=99999-"}, 416),
    "record-not-modified": Case(R + "/plain", {"If-None-Match": "{etag}"}, 304),
    "record-missing": Case(R + "/nope", {}, 404),
    "record-bad-key": Case(R + "/" + "k" * 300, {}, 400),
    "record-signed": Case("{record_url}", {}, 200, token=""),
    "record-bad-signature": Case(R + "/plain?signature=nope", {}, 403, token=""),
    "records-zip": Case(R, {}, 200),
    "records-zip-range": Case(R, {"Range": "bytes=10-99"}, 206),
    "records-zip-safe-names": Case(R + "?safeNames=1", {}, 200),
    "records-zip-prefix": Case(R + "?prefix=pl", {}, 200),
    "records-zip-signed": Case("{records_url}", {}, 200, token=""),
    "records-zip-stale-if-range": Case(R, {"Range": "bytes=10-99", "If-Range": '"stale"'}, 200),
    "records-zip-unsatisfiable": Case(R, {"Range": "bytes=99999999-"}, 416),
    "keys": Case("/v2/key-value-stores/{store}/keys", {}, 200),
    "keys-signed": Case("{keys_url}", {}, 200, token=""),
    "keys-bad-limit": Case("/v2/key-value-stores/{store}/keys?limit=x", {}, 400),
    "store-missing": Case("/v2/key-value-stores/AAAAAAAAAAAAAAAAA", {}, 404),
    "store-no-token": Case("/v2/key-value-stores", {}, 401, token=""),
    "store-bad-token": Case("/v2/key-value-stores/{store}", {}, 401, token="bad"),
    "store-other-user": Case("/v2/key-value-stores/{store}", {}, 403, token="bob"),
    "zip-other-user": Case(R, {}, 403, token="bob"),
    # datasets
    "datasets-list": Case("/v2/datasets", {}, 200),
    "dataset-get": Case("/v2/datasets/{dataset}", {}, 200, volatile=SIGNED_URLS),
    "dataset-statistics": Case("/v2/datasets/{dataset}/statistics", {}, 200),
    "dataset-items": Case("/v2/datasets/{dataset}/items?limit=3", GZIP, 200),
    "dataset-items-signed": Case("{items_url}&format=csv", {}, 200, token=""),
    "dataset-items-bad-format": Case("/v2/datasets/{dataset}/items?format=nope", {}, 400),
    "dataset-missing": Case("/v2/datasets/AAAAAAAAAAAAAAAAA", {}, 404),
    "datasets-bad-query": Case("/v2/datasets?ownership=nobody", {}, 400),
    "dataset-other-user": Case("/v2/datasets/{dataset}/statistics", {}, 403, token="bob"),
    # request queues
    "queues-list": Case("/v2/request-queues", {}, 200),
    "queue-get": Case("/v2/request-queues/{queue}", {}, 200),
    "queue-head": Case("/v2/request-queues/{queue}/head", {}, 200),
    "queue-requests": Case("/v2/request-queues/{queue}/requests", {}, 200),
    "queue-request": Case("/v2/request-queues/{queue}/requests/{request}", {}, 200),
    "queue-request-missing": Case("/v2/request-queues/{queue}/requests/AAAAAAAAAAAAAAA", {}, 404),
    "queue-head-bad-limit": Case("/v2/request-queues/{queue}/head?limit=-1", {}, 400),
    "queue-head-lock-not-get": Case("/v2/request-queues/{queue}/head/lock", {}, 405),
    # the rest
    "health-live": Case("/health/live", {}, 200, token=""),
    "health-ready": Case("/health/ready", {}, 200, token=""),
    # the exposition counts this very request: its length may differ between any two reads
    "metrics": Case("/metrics", {}, 200, volatile=frozenset({"content-length"})),
    "metrics-no-token": Case("/metrics", {}, 401, token=""),
    "openapi": Case("/v2/openapi.json", {}, 200),
    "unknown-path": Case("/v2/nothing-here", {}, 404),
    "root": Case("/", {}, 302, token=""),
    "console": Case("/console/", {}, 200, token=""),
    "console-not-modified": Case("/console/", {"If-None-Match": "{console_etag}"}, 304, token=""),
    "console-missing": Case("/console/nope.js", {}, 404, token=""),
}


@pytest.fixture(scope="module")
def world(shared_server: Server) -> dict[str, Any]:
    s = shared_server
    with s.client() as c:
        store = c.post("/v2/key-value-stores", params={"name": unique("hp")}).raise_for_status().json()["data"]["id"]
        rec = f"/v2/key-value-stores/{store}/records"
        c.put(f"{rec}/plain", content=TEXT, headers={"Content-Type": "text/plain"}).raise_for_status()
        c.put(f"{rec}/big", content=BIG, headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        c.put(f"{rec}/gz", content=GZ, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}
              ).raise_for_status()
        c.put(f"{rec}/huge", content=HUGE, headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"}
              ).raise_for_status()
        etag = c.get(f"{rec}/plain").headers["etag"]
        signed = c.get(f"/v2/key-value-stores/{store}").json()["data"]
        keys = c.get(f"/v2/key-value-stores/{store}/keys").json()["data"]["items"]
        record_url = next(k["recordPublicUrl"] for k in keys if k["key"] == "plain")
        console_etag = c.get("/console/").headers["etag"]
        dataset = c.post("/v2/datasets", params={"name": unique("hp")}).raise_for_status().json()["data"]["id"]
        items = [{"n": i, "s": "x" * i} for i in range(20)]
        c.post(f"/v2/datasets/{dataset}/items", json=items).raise_for_status()
        queue = c.post("/v2/request-queues", params={"name": unique("hp")}).raise_for_status().json()["data"]["id"]
        r = c.post(f"/v2/request-queues/{queue}/requests", json={"url": "https://example.com/a", "uniqueKey": "a"})
        request = r.raise_for_status().json()["data"]["requestId"]
        items_url = c.get(f"/v2/datasets/{dataset}").json()["data"]["itemsPublicUrl"]
    tokens = {"alice": s.token, "bob": s.extra_tokens["bob"], "": "", "bad": "x" * 40}
    return {"server": s, "tokens": tokens, "store": store, "dataset": dataset, "queue": queue, "request": request,
            "etag": etag, "console_etag": console_etag, "record_url": _local(record_url),
            "keys_url": _local(signed["keysPublicUrl"]), "records_url": _local(signed["recordsPublicUrl"]),
            "items_url": _local(items_url)}


def _local(url: str) -> str:
    """A public URL's target (its path and query), to ask of the server this test talks to."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _filled(text: str, world: dict[str, Any]) -> str:
    return text.format(**{k: v for k, v in world.items() if isinstance(v, str)})


def _exchange(world: dict[str, Any], case: Case, first: str, then: str, pipelined: bool = False,
              ) -> tuple[Answer, Answer]:
    """``first`` then ``then`` on one connection, the second asked once the first's answer is read, or with
    ``pipelined`` both at once (the second answer is then written as soon as the first is done)."""
    token = world["tokens"][case.token]
    headers = {_filled(k, world): _filled(v, world) for k, v in case.headers.items()}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    target = _filled(case.path, world)
    conn = Conn(world["server"].url)
    try:
        if pipelined:
            conn.send(first, target, headers)
            conn.send(then, target, headers)
            a, b = conn.read(first, target), conn.read(then, target)
        else:
            a = conn.ask(first, target, headers)
            b = conn.ask(then, target, headers)
        assert conn.buf == b"", conn.buf[:200]
    finally:
        conn.close()
    return a, b


def _comparable(answer: Answer, volatile: frozenset[str]) -> list[tuple[str, str]]:
    return [(k, "(varies)" if k in volatile else v) for k, v in answer.headers]


def _same(head: Answer, get: Answer, case: Case) -> None:
    h, g = _comparable(head, case.volatile), _comparable(get, case.volatile)
    assert (head.status, h) == (get.status, g), (
        f"status {head.status} vs {get.status}; HEAD only {sorted(set(h) - set(g))}, GET only {sorted(set(g) - set(h))}"
    )


@pytest.mark.parametrize("name", list(CASES))
def test_head_answers_the_get_s_status_and_headers(world: dict[str, Any], name: str) -> None:
    """HEAD then GET on one connection, pipelined (the GET parses right after the HEAD's head), and GET then HEAD
    (a HEAD after a GET's body); each HEAD's status and headers are its neighbouring GET's."""
    case = CASES[name]
    head, get = _exchange(world, case, "HEAD", "GET", pipelined=True)
    assert get.status == case.status, (get.status, get.body[:300])
    assert head.body == b""
    _same(head, get, case)
    get2, head2 = _exchange(world, case, "GET", "HEAD")
    _same(head2, get2, case)
    framing = {k: v for k, v in get.headers if k in ("content-length", "transfer-encoding")}
    if get.status != 304:
        assert framing, get.headers  # every GET here says how its body ends
    if "content-length" in framing:  # and its body is exactly that long (the ZIP's announced before its first byte)
        assert int(framing["content-length"]) == len(get.body)
    assert ("connection", "close") not in head.headers


@pytest.mark.parametrize("path", ["/v2/key-value-stores/{store}", "/metrics", R + "/big", "/v2/nothing-here"])
def test_the_access_log_counts_no_body_bytes_for_a_head(world: dict[str, Any], path: str) -> None:
    """A HEAD's access-log line (and the body bytes metric, from the same count) says 0 bytes, as none were sent:
    a JSON answer's handler makes its whole body for the Content-Length, and the log counted it as sent."""
    s = world["server"]
    marker = unique("probe")
    target = _filled(path, world) + ("&" if "?" in path else "?") + f"probe={marker}"
    conn = Conn(s.url)
    try:
        head = conn.ask("HEAD", target, {"Authorization": f"Bearer {s.token}"})
        get = conn.ask("GET", target, {"Authorization": f"Bearer {s.token}"})
    finally:
        conn.close()
    assert get.body
    lines: list[str] = []
    for _ in range(100):  # (written after the response)
        lines = [line for line in s.log().splitlines() if marker in line]
        if len(lines) == 2:
            break
        time.sleep(0.05)
    head_line, get_line = sorted(lines, key=lambda line: '"GET ' in line)
    assert f' {head.status} 0 ' in head_line, head_line
    assert f' {get.status} {len(get.body)} ' in get_line, get_line


BODY_MAKERS = ("records-zip", "records-zip-safe-names", "records-zip-range", "record-big", "record-gz-decoded",
               "record-big-range", "record-huge-decoded-far-range", "dataset-items", "dataset-items-signed")


def test_a_head_makes_no_body(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes a GET's body (a ZIP's bytes, a record's read or decode, an export's rendering) is not run for a
    HEAD: with each replaced by a failure, the HEADs answer as before (their Content-Length, a ZIP's exact size,
    comes from what the storage knows, not from making the body)."""
    from openkvs.api import download, items, records
    from tests.inprocess import InProcessServer

    if not isinstance(world["server"], InProcessServer):
        pytest.skip("the server is another process: nothing here to replace")

    def refused(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a HEAD made a body")

    expected = {name: _exchange(world, CASES[name], "HEAD", "HEAD")[0] for name in BODY_MAKERS}
    monkeypatch.setattr(download, "_archive_bytes", refused)
    monkeypatch.setattr(records, "_record_bytes", refused)
    monkeypatch.setattr(items, "render", refused)
    for name in BODY_MAKERS:
        head, again = _exchange(world, CASES[name], "HEAD", "HEAD")
        assert (head.status, head.headers) == (again.status, again.headers) == (
            expected[name].status, expected[name].headers), name
        assert head.status == CASES[name].status, name
    get = _exchange(world, CASES["records-zip"], "HEAD", "GET")[1]
    assert get.status == 500  # (and a GET does make it: the replacement was in effect)


def test_a_head_over_the_rate_limit_answers_the_get_s_429(tmp_path: Path) -> None:
    """The 429 (with Retry-After and the limit's X-RateLimit-Limit) is the same for HEAD and GET: a record's, a
    store's. The limiter's clock stands still, so the budget, once spent, stays spent."""
    from tests.ratelimit.helpers import FakeClock

    s = make_server(tmp_path, "sqlite", "--rate-limits", "on", "--rate-limit-records-per-second", "2",
                    "--rate-limit-store-per-second", "2", in_process=True, clock=FakeClock())
    try:
        with s.client() as c:
            store = c.post("/v2/key-value-stores", params={"name": unique("rl")}).raise_for_status().json()["data"]
            c.put(f"/v2/key-value-stores/{store['id']}/records/k", content=b"v").raise_for_status()
        auth = {"Authorization": f"Bearer {s.token}"}
        for target in (f"/v2/key-value-stores/{store['id']}/records/k", f"/v2/key-value-stores/{store['id']}/keys"):
            conn = Conn(s.url)
            try:
                while conn.ask("GET", target, auth).status != 429:
                    pass
                head, get = conn.ask("HEAD", target, auth), conn.ask("GET", target, auth)
            finally:
                conn.close()
            assert head.status == 429 and head.body == b"" and ("retry-after" in dict(head.headers))
            _same(head, get, CASES["record-plain"])
    finally:
        s.stop()
