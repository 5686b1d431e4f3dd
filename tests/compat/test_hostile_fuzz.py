"""A hostile fuzzing pass over every operation of openkvs's own description (/v2/openapi.json), on both backends
(issue 11, "Tests"): deep JSON, huge and odd numbers, unicode (lone surrogates, NUL, RTL, combining, 4-byte),
odd percent-encodings in paths and keys, Content-Encoding garbage and bombs, odd Content-Types, repeated query
parameters, Range / If-Range / If-None-Match / Authorization garbage.

What must hold for every request: no 5xx but a storage answer (503 service-unavailable, 507
insufficient-storage), every error in the API's JSON shape, the connection answered (never cut), no traceback in
the server's log, and the server still running at the end.

Requests are written as raw bytes on a socket (an HTTP client would fix up the very paths and headers we want to
send odd), and read back with the standard library's response parser.

Bounded and repeatable: a fixed sweep (hostile values one at a time, the rest of the request ordinary; each
operation gets every fifth value of each catalog, a different fifth per operation, so every value reaches
several operations) plus a derandomized hypothesis run of FUZZ_EXAMPLES combinations per operation.
OPENKVS_FUZZ_FULL=1 sends every value to every operation (about 8,700 requests per backend),
OPENKVS_FUZZ_EXAMPLES=n runs n combinations per operation, and OPENKVS_FUZZ_SEED=s draws other ones
(exploration: what they find becomes a regression test in tests/api/test_fuzz_findings.py). The servers run with a small --max-record-bytes so a bomb is refused after a few
MiB of decoding instead of being stored whole."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import brotli
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from openkvs import openapi, signing

try:
    from tests.conftest import Server, _stop_and_clean, make_server
except ImportError:  # tests/ not importable as a package
    from conftest import Server, _stop_and_clean, make_server  # type: ignore[no-redef]

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = int(os.environ.get("OPENKVS_FUZZ_EXAMPLES", "25"))
FUZZ_SEED = os.environ.get("OPENKVS_FUZZ_SEED")
SWEEP_STRIDE = 1 if os.environ.get("OPENKVS_FUZZ_FULL") else 5
MAX_RECORD_BYTES = 4 * 1024 * 1024
PACKED = gzip.compress(b"x" * 300_000)  # a record stored gzipped
STORAGE_ANSWERS = {503: {"service-unavailable"}, 507: {"insufficient-storage"}}

# -- the operations, from the description the server serves ------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # template, e.g. /v2/key-value-stores/{storeId}/records/{recordKey}
    query: tuple[str, ...]
    headers: tuple[str, ...]
    has_body: bool

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _operations(description: dict[str, Any]) -> list[Operation]:
    components = description["components"]["parameters"]
    ops = []
    for path, item in description["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            params = [
                components[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                for p in [*item.get("parameters", []), *op.get("parameters", [])]
            ]
            ops.append(
                Operation(
                    method.upper(),
                    path,
                    tuple(p["name"] for p in params if p["in"] == "query"),
                    tuple(p["name"] for p in params if p["in"] == "header"),
                    "requestBody" in op,
                )
            )
    return ops


OPERATIONS = _operations(openapi.build())

# -- hostile values ----------------------------------------------------------------------------------------------

# Text that breaks naive handling: NUL, lone surrogates (UTF-16 halves with no UTF-8 form), RTL and combining
# marks, 4-byte characters, BOM, overlong lengths, JSON and SQL metacharacters.
HOSTILE_TEXT = [
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "a\ud800b", "\U0001f600", "\U0010ffff", "\u202eevil\u202c",
    "e\u0301\u0301\u0301", "\ufeffkey", "\uffff", "\u2028\u2029", "Ω≈ç√", "٣", "１２３", "' OR 1=1 --", '"}', "%s%n",
    "\\", "../../etc/passwd", "~", "~~", "a~b~c", "a" * 256, "a" * 257, "x" * 5000, "image-\ud800", "image-\x00",
    "REPORT", "image-1", "\t\x0b\x0c", "null", "true", "[]", "{}",
]

HOSTILE_NUMBERS = [
    "0", "-0", "-1", "-9223372036854775808", "9223372036854775807", "9223372036854775808", "18446744073709551616",
    str(2**53), str(2**53 + 1), "9" * 30, "9" * 5000, "-" + "9" * 5000, "1e3", "1E999999", "-1e-999", "1.5",
    "0.0000001", "0x10", "1_000", "+5", " 5", "5 ", "NaN", "Infinity", "-inf", "١٢", "²", "0" * 5000 + "1", "1e",
]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def pct(text: str) -> str:
    """A value percent-encoded as a client would (lone surrogates as their WTF-8 bytes)."""
    return quote(_utf8(text), safe="")


# Path segments written as they go on the wire: odd and invalid percent-encodings, overlong UTF-8, encoded
# slashes, dot segments.
ODD_SEGMENTS = [
    "%", "%%", "%zz", "%0", "%00", "a%00b", "%2F", "a%2Fb", "%2e%2e", "..", ".", "%C0%AF", "%C0%80", "%ED%A0%80",
    "%F4%90%80%80", "%FF%FE", "%252F", "%25", "a%0Ab", "%0D%0A", "%09", "%E2%80%AE", "%F0%9F%98%80", "+", "%2B",
    "a;b", "a?b", "%3F", "%23", "%7E", "~", "%7Efuzz-target", "alice~fuzz-target", "nobody~x", "~" + "a" * 300,
    "a" * 3000, "%41" * 600, "-", "A" * 17, "A" * 300,
]

RANGES = [
    "bytes=0-0", "bytes=-1", "bytes=0-", "bytes=1-0", "bytes=-0", "bytes=5-3", "bytes=0-" + "9" * 5000,
    "bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000, "bytes=0-1,2-3", "bytes=0-1," * 500, "bytes=", "bytes",
    "bytes=-", "bytes=a-b", "bytes=٣-٤", "bytes=+1-2", "bytes=1--2", "bytes=0x1-2", "items=0-1", "=", "bytes=0-1;x",
    "bytes=\t0\t-\t1\t", "bytes=99999999999999999999-", "BYTES=0-1",
]
ETAG_GARBAGE = [
    "*", '"', '""', "W/", 'W/"', "W/*", ",", ",,,", "x" * 8000, '"a",' * 1000, "Sun, 06 Nov 1994 08:49:37 GMT",
    '"\u00ff"', "\u00ff", "W/W/W/\"x\"",
]
AUTHORIZATIONS = [
    "", "Bearer", "Bearer ", "Bearer  \t", "bearer x", "Basic Zm9vOmJhcg==", "Basic", "Digest x", "Bearer " + "a" * 8000,
    "Bearer okvs_", "Bearer okvs_\u00ff\u00fe", "Bearer okvs_x okvs_y", "Bearer\tokvs_x", "BEARER x", "Token x",
    "Bearer " + "%00", "Bearer =?utf-8?b?AA==?=",
]
CONTENT_TYPES = [
    "", "application/json", "application/json; charset=utf-16", "application/json; charset=latin-1",
    "application/json; charset=\u00ff", "text/plain", "image/png", "image/*", "*/*", "multipart/form-data",
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", ";", "/", "a/b/c", "x" * 5000,
    "application/json;;;;", 'application/json; charset="', "text/html; charset=utf-8\u00ff",
]
CONTENT_ENCODINGS = [
    "gzip", "br", "deflate", "x-gzip", "identity", "GZIP", " gzip ", "gzip, br", "gzip,gzip", "compress", "zstd",
    "*", "\u00ff", "gzip;q=1", "chunked",
]
ACCEPT_ENCODINGS = ["gzip", "br", "deflate", "*", "gzip;q=0", "*;q=0", "identity;q=0", "\u00ff", "x" * 5000, ",,;;"]

# Request bodies (as bytes): deep JSON, numbers no float or 64-bit integer holds, strings storage can't hold,
# and things that aren't JSON at all.
DEEP = [b"[" * 65 + b"]" * 65, b"[" * 100_000 + b"]" * 100_000, b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000]
NUMBER_BODIES = [
    b"1e999999", b"-1e400", b"9" * 5000, b"-" + b"9" * 5000, b"1." + b"0" * 5000 + b"1", b"NaN", b"-Infinity",
    b"[1e308, -1e308, 5e-324, -0.0]", b"9223372036854775808", b"[" + b",".join([b"1e308"] * 2000) + b"]",
    b'{"limit": 1e400, "offset": -1}',
]
STRING_BODIES = [
    b'"\\u0000"', b'"\\ud800"', b'"\\udfff\\ud800"', b'{"\\u0000": 1}', b'{"\\ud800": 1}', b'"\xed\xa0\x80"',
    b'"\xff\xfe"', b"\xef\xbb\xbf{}", b'"\xe2\x80\xae"', b'{"a": 1, "a": 2}', b'{"__proto__": {"x": 1}}',
    _utf8(json.dumps({"k": "\U0001f600" * 1000}, ensure_ascii=False)),
]
NOT_JSON = [b"", b" ", b"\x00", b"{", b"}", b"[1,]", b"{'a': 1}", b"\xff" * 100, b"undefined", b"\x1f\x8b\x08\x00"]
JSON_BODIES = DEEP + NUMBER_BODIES + STRING_BODIES + NOT_JSON


def _bomb(compress: Any, size: int) -> bytes:
    return compress(b"\x00" * size)


# Encoded bodies: (Content-Encoding, bytes). Bombs decode to four times the record limit (and far over the JSON
# body cap); garbage and truncated streams must be 400s.
_ZEROS = 4 * MAX_RECORD_BYTES
ENCODED_BODIES = [
    ("gzip", _bomb(gzip.compress, _ZEROS)),
    ("br", _bomb(lambda b: brotli.compress(b, quality=5), _ZEROS)),
    ("deflate", _bomb(zlib.compress, _ZEROS)),
    ("deflate", _bomb(lambda b: zlib.compress(b)[2:-4], _ZEROS)),  # raw deflate
    ("gzip", gzip.compress(b'{"a": 1}')[:-5]),  # truncated
    ("gzip", gzip.compress(b"{}") + b"trailing garbage"),
    ("gzip", gzip.compress(b"{}") * 3),  # several members
    ("br", b"\xff" * 64),
    ("deflate", b"\x78\x9c\xff\xff"),
    ("gzip", b"\x1f\x8b" + b"\x00" * 30),
    ("br", brotli.compress(b'{"a": 1}')[:-1]),
    ("gzip", gzip.compress(b"[" * 100_000 + b"]" * 100_000)),
    ("br", brotli.compress(b"\xff\xfe not json")),
    ("gzip", gzip.compress(gzip.compress(b"{}"))),  # encoded twice, declared once
]

# -- the server and the store the cases aim at -------------------------------------------------------------------

# A schema whose collections make record writes go through the JSON Schema checks, with the keywords that do
# arithmetic or matching on the record's values.
TARGET_SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "title": "fuzz",
    "collections": {
        "report": {"title": "Report", "key": "REPORT", "contentTypes": ["application/json"],
                   "jsonSchema": {"type": "object", "properties": {"n": {"multipleOf": 0.01, "maximum": 1e300}}}},
        "numbers": {"title": "Numbers", "keyPrefix": "num-", "contentTypes": ["application/json"],
                    "jsonSchema": {"type": "array", "uniqueItems": True, "items": {"multipleOf": 7}}},
        "texts": {"title": "Texts", "keyPrefix": "txt-", "contentTypes": ["application/json"],
                  "jsonSchema": {"anyOf": [{"type": "string", "pattern": "^(a+)+$", "format": "date-time"},
                                           {"type": "object", "patternProperties": {"^[a-z\u00e9]+$": {"const": 1e300}}}]}},
        "images": {"title": "Images", "keyPrefix": "image-", "contentTypes": ["image/*"]},
    },
}

SCHEMA_BODIES = [
    {"schema": None}, {"schema": "x"}, {"schema": []}, {"schema": {}},
    {"schema": {**TARGET_SCHEMA, "actorKeyValueStoreSchemaVersion": 1e400}},
    {"schema": {**TARGET_SCHEMA, "actorKeyValueStoreSchemaVersion": 2**70}},
    {"schema": {**TARGET_SCHEMA, "collections": {"\ud800": {"key": "a"}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"key": "\x00"}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"$ref": "file:///etc/passwd"}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"$ref": "#/definitions/x"}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"pattern": "(?<=a)b"}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"pattern": "\\ud800"}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"pattern": "a{99999}"}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"multipleOf": 0}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"multipleOf": -1e-400}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"type": "nope"}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "jsonSchema": {"$schema": "x:\x00"}}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "contentTypes": ["\x00/\ud800"]}}}},
    {"schema": {**TARGET_SCHEMA, "collections": {"c": {"keyPrefix": "a", "contentTypes": "image/*"}}}},
    {"name": "\ud800"}, {"name": "a" * 64}, {"name": 5}, {"name": ["x"]}, {"generalAccess": None},
    {"generalAccess": "\x00"}, {"generalAccess": 1e400}, {"username": "\x00", "access": "READ"},
    {"username": "\ud800", "access": "WRITE"}, {"username": "bob", "access": "read"}, {"username": ["bob"]},
    {"username": "bob", "access": "READ", "extra": "x" * 100_000},
]


def _record_signature(fz: Fuzz, key: str) -> str:
    return signing.record_signature(fz.secret, key)


@dataclass
class Fuzz:
    server: Server
    backend: str
    store_id: str = ""
    secret: str = ""
    log_offset: int = 0
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    def ensure_target(self) -> None:
        """The store named fuzz-target, with records to read (a case may have renamed or deleted them)."""
        with self.server.client() as c:
            r = c.post("/v2/key-value-stores", params={"name": "fuzz-target"}, json={"schema": TARGET_SCHEMA})
            assert r.status_code in (200, 201), r.text
            data = r.json()["data"]
            self.store_id, self.secret = data["id"], data["urlSigningSecretKey"]
            c.put(f"/v2/key-value-stores/{self.store_id}/grants", json={"username": "bob", "access": "READ"})
            base = f"/v2/key-value-stores/{self.store_id}/records"
            for key, body, headers in [
                ("plain", b"0123456789" * 100, {"Content-Type": "text/plain"}),
                ("packed", PACKED, {"Content-Encoding": "gzip"}),
                ("REPORT", b'{"n": 1.5}', {"Content-Type": "application/json"}),
            ]:
                r = c.put(f"{base}/{key}", content=body, headers=headers)
                assert r.status_code == 201, r.text

    def new_log(self) -> str:
        """What the server logged since the last call: read from where the last one stopped (the log grows by a
        line per request, and the pass sends thousands)."""
        if self.server.log_path is None:
            return ""
        with open(self.server.log_path, "rb") as f:
            f.seek(self.log_offset)
            fresh = f.read()
        self.log_offset += len(fresh)
        return fresh.decode("utf-8", "replace")


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunked: bool = False

    def wire(self, port: int) -> bytes:
        head = [f"{self.method} {self.target} HTTP/1.1".encode("latin-1", "replace"), f"Host: 127.0.0.1:{port}".encode()]
        names = {n.lower() for n, _ in self.headers}
        head += [n + b": " + v for n, v in self.headers]
        if self.chunked:
            head.append(b"Transfer-Encoding: chunked")
            size = max(len(self.body) // 3, 1)
            pieces = [self.body[i : i + size] for i in range(0, len(self.body), size)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            if self.body or b"content-length" not in names:
                head.append(b"Content-Length: %d" % len(self.body))
            body = self.body
        head.append(b"Connection: close")
        return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def exchange(port: int, request: Request) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        try:
            sock.sendall(request.wire(port))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was sent: the answer is still there to read
        response = http.client.HTTPResponse(sock, method=request.method)
        response.begin()
        return Answer(response.status, response.headers, response.read())


def check(fz: Fuzz, request: Request) -> Answer:
    """Send ``request`` and assert what must hold for every answer."""
    try:
        answer = exchange(fz.port, request)
    except (http.client.HTTPException, ConnectionError) as exc:
        pytest.fail(f"{request.method} {request.target!r}: connection cut without a complete answer ({exc!r})")
    fz.sent += 1
    fz.by_status[answer.status] = fz.by_status.get(answer.status, 0) + 1
    what = f"{request.method} {request.target[:300]!r} headers={request.headers!r:.600} body={request.body[:200]!r}"
    assert fz.server.proc is not None and fz.server.proc.poll() is None, f"server died after {what}"
    if answer.status >= 400:
        ctype = answer.headers.get("content-type", "")
        assert ctype.startswith("application/json"), f"{answer.status} not JSON ({ctype}) for {what}"
        if request.method != "HEAD":
            error = json.loads(answer.body)["error"]
            assert isinstance(error["type"], str) and isinstance(error["message"], str), (answer.body, what)
            if answer.status >= 500:
                allowed = STORAGE_ANSWERS.get(answer.status, set())
                assert error["type"] in allowed, f"{answer.status} {error} for {what}"
    assert answer.status < 500 or answer.status in STORAGE_ANSWERS, f"{answer.status} for {what}"
    log = fz.new_log()
    assert "Traceback" not in log and "request failed" not in log, f"{what}\n{log[-4000:]}"
    return answer


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fz(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    backend = request.param
    server = make_server(
        tmp_path_factory.mktemp(f"fuzz-{backend}"), backend,
        "--rate-limits", "off", "--max-record-bytes", str(MAX_RECORD_BYTES),
    )
    server.new_user("bob")
    fuzz = Fuzz(server, backend)
    fuzz.ensure_target()
    yield fuzz
    alive = server.proc is not None and server.proc.poll() is None
    _stop_and_clean(server, backend)
    print(f"\nfuzz {backend}: {fuzz.sent} requests, statuses {dict(sorted(fuzz.by_status.items()))}")
    assert alive, "the server died during the fuzzing pass"


# -- building requests -------------------------------------------------------------------------------------------


@dataclass
class Parts:
    """One request in parts, before it is written: the defaults are an ordinary, authorized request."""

    path_params: dict[str, str] = field(default_factory=dict)  # already percent-encoded
    query: list[tuple[str, str]] = field(default_factory=list)  # already percent-encoded
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes | None = None
    chunked: bool = False
    token: str | None = "owner"  # "owner", "bob", "none", or a raw Authorization value (in headers)


def build(fz: Fuzz, op: Operation, parts: Parts) -> Request:
    defaults = {"storeId": fz.store_id, "recordKey": "plain", "username": "bob"}
    target = op.path
    for name in ("storeId", "recordKey", "username"):
        target = target.replace("{" + name + "}", parts.path_params.get(name, defaults[name]))
    query = [(n, v.replace("SIGNATURE", _signature(fz, op, parts))) for n, v in parts.query]
    if query:
        target += "?" + "&".join(f"{n}={v}" if v is not None else n for n, v in query)
    headers: dict[str, bytes] = {}
    if parts.token == "owner":
        headers["Authorization"] = f"Bearer {fz.server.token}".encode()
    elif parts.token == "bob":
        headers["Authorization"] = f"Bearer {fz.server.extra_tokens['bob']}".encode()
    body = parts.body
    if body is None and op.has_body:
        body = _default_body(op).encode()
        headers["Content-Type"] = b"application/json"
    headers.update(parts.headers)
    return Request(op.method, target, [(k.encode(), v) for k, v in headers.items()], body or b"", parts.chunked)


def _signature(fz: Fuzz, op: Operation, parts: Parts) -> str:
    if "{recordKey}" in op.path:
        return _record_signature(fz, parts.path_params.get("recordKey", "plain"))
    return signing.content_signature(fz.secret, fz.store_id, 2**41)


def _default_body(op: Operation) -> str:
    if op.path.endswith("/grants"):
        return '{"username": "bob", "access": "READ"}'
    return "{}"


# -- the fixed sweep ---------------------------------------------------------------------------------------------


def sweep(op: Operation, share: int = 0) -> Iterator[Parts]:
    """Hostile values in every place this operation takes one, the rest of the request ordinary: each value of a
    catalog when SWEEP_STRIDE is 1, else the share-th of every SWEEP_STRIDE (so that, over the operations, every
    value is still sent to several of them)."""
    for parts in _sweep(op):
        share += 1
        if share % SWEEP_STRIDE == 0:
            yield parts


def _sweep(op: Operation) -> Iterator[Parts]:
    for name in ("storeId", "recordKey", "username"):
        if "{" + name + "}" in op.path:
            for text in HOSTILE_TEXT:
                yield Parts(path_params={name: pct(text)})
            for segment in ODD_SEGMENTS:
                yield Parts(path_params={name: segment})
    for name in (*op.query, "token", "signature"):
        for value in [*HOSTILE_TEXT, *HOSTILE_NUMBERS]:
            yield Parts(query=[(name, pct(value))])
        yield Parts(query=[(name, "1"), (name, "0"), (name, "x")])  # repeated
        yield Parts(query=[(name, "%"), (name, "%zz%00%ff")])
    yield Parts(query=[("signature", "SIGNATURE")], token="none")
    yield Parts(query=[("signature", "SIGNATURE")], token="bob")
    for value in RANGES:
        yield Parts(headers={"Range": value.encode()})
        yield Parts(headers={"Range": value.encode(), "If-Range": b'"x"'})
    for value in ETAG_GARBAGE:
        for name in ("If-None-Match", "If-Range"):
            yield Parts(headers={name: _utf8(value), "Range": b"bytes=0-1"})
    for value in AUTHORIZATIONS:
        yield Parts(headers={"Authorization": _utf8(value)}, token=None)
    for value in ACCEPT_ENCODINGS:
        yield Parts(headers={"Accept-Encoding": _utf8(value)}, path_params={"recordKey": "packed"})
    yield Parts(token="bob")
    yield Parts(token="none")
    bodies = [*JSON_BODIES, *(json.dumps(b, ensure_ascii=False).encode("utf-8", "surrogatepass") for b in SCHEMA_BODIES)]
    if op.has_body or op.method in ("GET", "DELETE"):  # a body where none is expected is ignored, never a 500
        for body in bodies if op.has_body else bodies[:6]:
            yield Parts(body=body, headers={"Content-Type": b"application/json"})
        for encoding, body in ENCODED_BODIES:
            yield Parts(body=body, headers={"Content-Encoding": encoding.encode(), "Content-Type": b"application/json"})
        for value in CONTENT_ENCODINGS:
            yield Parts(body=b"{}", headers={"Content-Encoding": _utf8(value)})
        for value in CONTENT_TYPES:
            yield Parts(body=b'{"n": 1}', headers={"Content-Type": _utf8(value)})
        yield Parts(body=b"{}" * 1000, chunked=True)
        yield Parts(body=b"", headers={"Content-Length": b"5"})  # declared, never sent: the server waits, then?
        yield Parts(body=b"{}", headers={"Content-Length": b"-1"})
        yield Parts(body=b"{}", headers={"Content-Length": b"9" * 40})
    if "{recordKey}" in op.path and op.has_body:
        for key in ("REPORT", "num-1", "txt-1", "image-1"):
            for body in [*NUMBER_BODIES, *STRING_BODIES, b'{"n": 1e308}', b'{"n": -1e308}', b'{"n": 9' + b"9" * 400 + b"}",
                         b"[" + b"7," * 5000 + b"7]", b"[1e308, 1e308]", b'"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"',
                         b'{"\\u00e9": 1}', b'"2024-13-45T99:99:99Z"', b'[[[[1]]], [[[1]]]]']:
                yield Parts(path_params={"recordKey": key}, body=body, headers={"Content-Type": b"application/json"})


def _sweep_params() -> list[Any]:
    return [pytest.param(op, id=str(op)) for op in OPERATIONS]


def changes_the_target(op: Operation, answer: Answer) -> bool:
    """Whether a request may have deleted, renamed or emptied the target store, so that the next one needs it made
    again: a DELETE or a store PUT that succeeded. A refused request changed nothing (remaking the store after each
    of them was most of this pass's requests)."""
    return answer.status < 400 and (op.method == "DELETE" or (op.method == "PUT" and "{recordKey}" not in op.path))


@pytest.mark.parametrize("op", _sweep_params())
def test_hostile_sweep(fz: Fuzz, op: Operation) -> None:
    fz.ensure_target()
    for parts in sweep(op, OPERATIONS.index(op)):
        if parts.headers.get("Content-Length") == b"5":
            continue  # a body that never comes: the server's read timeout, not what this pass is about
        answer = check(fz, build(fz, op, parts))
        if changes_the_target(op, answer):
            fz.ensure_target()


# -- the hypothesis pass -----------------------------------------------------------------------------------------

_text = st.text(st.characters(codec=None, exclude_characters="\r\n"), max_size=40)
_hostile_text = st.one_of(st.sampled_from(HOSTILE_TEXT), _text)
_number_text = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS),
    st.integers().map(str),
    st.floats().map(repr),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def _json_body(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["catalog", "generated", "deep", "schema"]))
    if kind == "catalog":
        return draw(st.sampled_from(JSON_BODIES))
    if kind == "deep":
        depth = draw(st.sampled_from([64, 65, 1000, 200_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        inner = b"[]" if opener == b"[" else b"1"
        return opener * depth + inner + closer * depth
    value = draw(st.sampled_from(SCHEMA_BODIES)) if kind == "schema" else draw(_json_value)
    # allow_nan: NaN and Infinity as JSON literals, which Python writes and some parsers take
    return json.dumps(value, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def _parts(draw: st.DrawFn, op: Operation) -> Parts:
    parts = Parts()
    for name in ("storeId", "recordKey", "username"):
        if "{" + name + "}" in op.path and draw(st.integers(0, 2)) == 0:
            parts.path_params[name] = draw(st.one_of(_hostile_text.map(pct), st.sampled_from(ODD_SEGMENTS)))
    if "{recordKey}" in op.path and "recordKey" not in parts.path_params:
        parts.path_params["recordKey"] = draw(st.sampled_from(["plain", "packed", "REPORT", "num-1", "txt-x", "image-"]))
    names = st.sampled_from([*op.query, "token", "signature", "limit", "x"])
    values = st.one_of(_hostile_text.map(pct), _number_text.map(pct), st.just("SIGNATURE"), st.just("%zz"))
    parts.query = draw(st.lists(st.tuples(names, values), max_size=4))
    parts.token = draw(st.sampled_from(["owner", "owner", "owner", "bob", "none", None]))
    header_values = {
        "Authorization": st.sampled_from(AUTHORIZATIONS).map(_utf8),
        "Range": st.sampled_from(RANGES).map(str.encode),
        "If-Range": st.sampled_from(ETAG_GARBAGE).map(_utf8),
        "If-None-Match": st.sampled_from(ETAG_GARBAGE).map(_utf8),
        "Accept-Encoding": st.sampled_from(ACCEPT_ENCODINGS).map(_utf8),
        "Content-Type": st.sampled_from(CONTENT_TYPES).map(_utf8),
    }
    for name in draw(st.sets(st.sampled_from(sorted(header_values)), max_size=3)):
        if name == "Authorization" and parts.token is not None:
            continue
        parts.headers[name] = draw(header_values[name])
    if op.has_body or draw(st.integers(0, 9)) == 0:
        if draw(st.integers(0, 3)) == 0:
            encoding, parts.body = draw(st.sampled_from(ENCODED_BODIES))
            parts.headers["Content-Encoding"] = encoding.encode()
        else:
            parts.body = draw(_json_body())
        parts.headers.setdefault("Content-Type", b"application/json")
        parts.chunked = draw(st.integers(0, 4)) == 0
    return parts


def _hypothesis_settings() -> settings:
    return settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=FUZZ_SEED is None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


@pytest.mark.parametrize("op", _sweep_params())
def test_hostile_combinations(fz: Fuzz, op: Operation) -> None:
    fz.ensure_target()

    @_hypothesis_settings()
    @given(parts=_parts(op))
    def run(parts: Parts) -> None:
        answer = check(fz, build(fz, op, parts))
        if changes_the_target(op, answer):
            fz.ensure_target()

    if FUZZ_SEED is not None:
        run = seed(int(FUZZ_SEED))(run)
    run()


def test_every_served_operation_is_fuzzed(fz: Fuzz) -> None:
    import httpx

    served = httpx.get(fz.server.url + "/v2/openapi.json", timeout=30).json()
    assert {str(op) for op in _operations(served)} == {str(op) for op in OPERATIONS}
