"""Records over the wire (API.md 4.6): upload, download, encodings, conditional and range requests, keys,
limits, compression bombs and schema collections."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator

import brotli
import httpx
import pytest

from . import assert_error, new_store, raw_request, rec_path, unique

KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.'()"


@pytest.fixture
def alice(shared_server) -> Iterator[httpx.Client]:
    with shared_server.client() as c:
        yield c


@pytest.fixture
def store(alice) -> dict:
    return new_store(alice)


def test_put_get_roundtrip_headers(shared_server, alice, store):
    body = os.urandom(200_000)
    url = rec_path(store["id"], "blob")
    r = alice.put(url, content=body, headers={"content-type": "image/png"})
    assert r.status_code == 201, r.text
    assert r.content == b"{}"
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["location"] == f"{shared_server.url}/v2/key-value-stores/{store['id']}/records/blob"
    r = alice.get(url)
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["etag"].startswith('"') and r.headers["etag"].endswith('"')
    assert r.headers["last-modified"].endswith(" GMT")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "sandbox"
    assert "content-encoding" not in r.headers


@pytest.mark.parametrize("size", [0, 1, 1024, 64 * 1024, 64 * 1024 + 1, 300_000])
def test_plain_get_answers_exactly_like_a_get_with_parameters(alice, store, size):
    """A plain GET of a small record takes a cheap branch straight to the bytes (records._get_record); any query
    parameter sends the same request the whole way through. Both must give the same status, body and headers."""
    body = os.urandom(size)
    url = rec_path(store["id"], f"r{size}")
    assert alice.put(url, content=body, headers={"content-type": "text/csv"}).status_code == 201
    plain = alice.get(url)
    token = alice.headers["authorization"].removeprefix("Bearer ")
    general = [
        alice.get(url, params={"attachment": "false"}),
        httpx.get(f"{alice.base_url}{url}", params={"token": token}),  # the token in the query instead
    ]
    assert plain.status_code == 200 and plain.content == body

    def headers(r: httpx.Response) -> list[tuple[str, str]]:
        # the server's clock ticks, and every request gets its own id
        return sorted((k, v) for k, v in r.headers.multi_items() if k not in ("date", "x-request-id"))

    for other in general:
        assert (other.status_code, other.content) == (plain.status_code, plain.content)
        assert headers(other) == headers(plain)


def test_post_same_as_put_and_default_content_type(alice, store):
    url = rec_path(store["id"], "p")
    # httpx sends no Content-Type for raw bytes
    r = alice.post(url, content=b"abc")
    assert r.status_code == 201, r.text
    r = alice.get(url)
    assert r.content == b"abc"
    assert r.headers["content-type"] == "application/octet-stream"


def test_head_and_attachment(alice, store):
    url = rec_path(store["id"], "report.txt")
    alice.put(url, content=b"hello world", headers={"content-type": "text/plain"})
    r = alice.head(url)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == "11"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert alice.head(rec_path(store["id"], "nope")).status_code == 404
    for v in ("1", "true"):
        r = alice.get(url, params={"attachment": v})
        assert r.headers["content-disposition"] == 'attachment; filename="report.txt"'
        assert r.content == b"hello world"
    assert "content-disposition" not in alice.get(url).headers
    assert_error(alice.get(url, params={"attachment": "maybe"}), 400, "invalid-input")


def test_conditional_and_ranges(alice, store):
    body = bytes(range(256)) * 4
    url = rec_path(store["id"], "r")
    alice.put(url, content=body)
    etag = alice.get(url).headers["etag"]
    r = alice.get(url, headers={"if-none-match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag
    assert alice.get(url, headers={"if-none-match": '"other"'}).status_code == 200
    assert alice.get(url, headers={"if-none-match": f'"other", W/{etag}'}).status_code == 304  # weak comparison
    assert alice.get(url, headers={"if-none-match": "*"}).status_code == 304
    r = alice.get(url, headers={"range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == body[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(body)}"
    assert r.headers["content-length"] == "10"
    r = alice.get(url, headers={"range": "bytes=-5"})
    assert r.status_code == 206 and r.content == body[-5:]
    r = alice.get(url, headers={"range": f"bytes={len(body)}-"})
    assert_error(r, 416, "invalid-range")
    assert r.headers["content-range"] == f"bytes */{len(body)}"


def test_delete_idempotent_and_missing(alice, store):
    url = rec_path(store["id"], "d")
    alice.put(url, content=b"x")
    assert alice.delete(url).status_code == 204
    assert alice.delete(url).status_code == 204
    assert_error(alice.get(url), 404, "record-not-found", "Record was not found")
    r = alice.head(url)
    assert r.status_code == 404


def test_overwrite(alice, store):
    url = rec_path(store["id"], "o")
    alice.put(url, content=b"first", headers={"content-type": "text/plain"})
    alice.put(url, content=b"second!", headers={"content-type": "application/json"})
    r = alice.get(url)
    assert r.content == b"second!" and r.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "encoding,encode",
    [
        ("gzip", gzip.compress),
        ("br", brotli.compress),
        ("deflate", zlib.compress),
        ("deflate-raw", lambda b: zlib.compressobj(wbits=-15).compress(b) + zlib.compressobj(wbits=-15).flush()),
    ],
)
def test_content_encodings(alice, store, encoding, encode):
    plain = b"The quick brown fox. " * 5000
    if encoding == "deflate-raw":
        c = zlib.compressobj(wbits=-15)
        stored = c.compress(plain) + c.flush()
        encoding = "deflate"
    else:
        stored = encode(plain)
    url = rec_path(store["id"], f"enc-{encoding}")
    r = alice.put(url, content=stored, headers={"content-encoding": encoding, "content-type": "text/plain"})
    assert r.status_code == 201, r.text
    # a client that takes the encoding gets the stored bytes as they are (read raw, not decoded by httpx)
    with alice.stream("GET", url, headers={"accept-encoding": encoding}) as r:
        raw = r.read() if False else b"".join(r.iter_raw())
        assert r.status_code == 200
        assert r.headers["content-encoding"] == encoding
        assert r.headers["content-length"] == str(len(stored))
        assert raw == stored
    # identity: decoded on the fly, with the decoded length
    with alice.stream("GET", url, headers={"accept-encoding": "identity"}) as r:
        raw = b"".join(r.iter_raw())
        assert r.status_code == 200
        assert "content-encoding" not in r.headers
        assert r.headers["content-length"] == str(len(plain))
        assert raw == plain
    # a range of the decoded form
    r = alice.get(url, headers={"accept-encoding": "identity", "range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == plain[100:200]
    # q=0 refuses the encoding
    with alice.stream("GET", url, headers={"accept-encoding": f"{encoding};q=0, identity"}) as r:
        assert "content-encoding" not in r.headers and b"".join(r.iter_raw()) == plain
    # ... also after a "*" that would take it: the coding's own entry decides (RFC 9110 12.5.3)
    with alice.stream("GET", url, headers={"accept-encoding": f"*, {encoding};q=0"}) as r:
        assert "content-encoding" not in r.headers and b"".join(r.iter_raw()) == plain
    with alice.stream("GET", url, headers={"accept-encoding": "*"}) as r:
        assert r.headers["content-encoding"] == encoding and b"".join(r.iter_raw()) == stored
    # HEAD agrees with GET
    r = alice.head(url, headers={"accept-encoding": "identity"})
    assert r.headers["content-length"] == str(len(plain))
    # the key listing reports the stored size
    keys = alice.get(f"/v2/key-value-stores/{store['id']}/keys").json()["data"]["items"]
    assert [k["size"] for k in keys if k["key"] == f"enc-{encoding}"] == [len(stored)]


def test_identity_encoding_header_and_empty_body(alice, store):
    url = rec_path(store["id"], "id")
    assert alice.put(url, content=b"plain", headers={"content-encoding": "identity"}).status_code == 201
    r = alice.get(url)
    assert r.content == b"plain" and "content-encoding" not in r.headers
    url = rec_path(store["id"], "empty")
    r = alice.put(url, content=b"")
    assert r.status_code == 201, r.text
    r = alice.get(url)
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "0"


def test_zero_byte_gzip_stream(alice, store):
    stored = gzip.compress(b"")
    url = rec_path(store["id"], "gz0")
    r = alice.put(url, content=stored, headers={"content-encoding": "gzip"})
    assert r.status_code == 201, r.text
    with alice.stream("GET", url, headers={"accept-encoding": "identity"}) as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == "0"
        assert b"".join(r.iter_raw()) == b""
    with alice.stream("GET", url, headers={"accept-encoding": "gzip"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        assert b"".join(r.iter_raw()) == stored


def test_unsupported_and_corrupt_encoding(alice, store):
    url = rec_path(store["id"], "bad")
    alice.put(url, content=b"old")
    r = alice.put(url, content=b"whatever", headers={"content-encoding": "zstd"})
    assert_error(r, 415, "unsupported-content-encoding", 'Content-Encoding "zstd" is not supported.')
    good = gzip.compress(os.urandom(100_000))
    for corrupt in (b"this is not gzip at all", good[:-100], good[:10] + bytes(50) + good[60:]):
        r = alice.put(url, content=corrupt, headers={"content-encoding": "gzip"})
        assert_error(r, 400, "invalid-input")
    assert alice.get(url).content == b"old"
    # nothing stored for a new key either
    url2 = rec_path(store["id"], "bad2")
    assert_error(alice.put(url2, content=b"garbage", headers={"content-encoding": "br"}), 400, "invalid-input")
    assert alice.get(url2).status_code == 404


def test_odd_keys(alice, store):
    sid = store["id"]
    keys = [KEY_CHARS, "k" * 256, "a.b", "...", "(x)", "!", "'q'", "-", "_"]
    for key in keys:
        url = rec_path(sid, key)
        r = alice.put(url, content=key.encode())
        assert r.status_code == 201, (key, r.text)
        r = alice.get(url)
        assert r.status_code == 200 and r.content == key.encode(), key
    # percent-encoded in the path: decoded once
    quoted = "%28x%29"
    assert alice.get(f"/v2/key-value-stores/{sid}/records/{quoted}").content == b"(x)"
    listed = alice.get(f"/v2/key-value-stores/{sid}/keys").json()["data"]["items"]
    assert sorted(k["key"] for k in listed) == sorted(keys)
    assert [k["key"] for k in listed] == sorted(keys)  # byte order


@pytest.mark.parametrize(
    "raw_key",
    ["k" * 257, ".", "..", "%2E", "%2E%2E", "a%2Fb", "%2F", "a%20b", "%C3%BC", "a%00", "a$b", "a%252Fb", "a:b", "a,b", "a%", "a%0A", "%0A"],
)
def test_bad_keys(shared_server, store, raw_key):
    path = f"/v2/key-value-stores/{store['id']}/records/{raw_key}"
    auth = {"Authorization": f"Bearer {shared_server.token}"}
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        r = raw_request(shared_server.url, method, path, b"x" if method == "PUT" else None, auth)
        if method == "HEAD":
            assert r.status_code == 400
            continue
        assert_error(r, 400, "invalid-record-key")
    if raw_key == "k" * 257:
        assert "256" in r.json()["error"]["message"]


def test_newline_inside_a_key_gets_the_same_answer_for_every_method(shared_server, store):
    """A newline is a character the key rule refuses, like any other (issue 11 item 14: it was 404 page-not-found,
    no route matching it), for GET/HEAD as for every other method."""
    for raw_key in ("a%0Ab", "k%0Ak", "a%0A", "%0A"):
        path = f"/v2/key-value-stores/{store['id']}/records/{raw_key}"
        auth = {"Authorization": f"Bearer {shared_server.token}"}
        for method in ("GET", "HEAD", "PUT", "DELETE"):
            r = raw_request(shared_server.url, method, path, b"x" if method == "PUT" else None, auth)
            assert r.status_code == 400, (raw_key, method, r.status_code)
            if method != "HEAD":
                assert r.json()["error"]["type"] == "invalid-record-key", (raw_key, method)


def test_key_with_slash_path(alice, store):
    # a literal '/' in the key part of the path
    r = alice.put(f"/v2/key-value-stores/{store['id']}/records/a/b", content=b"x")
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["type"] in ("invalid-record-key", "page-not-found")


def test_schema_collections(alice):
    schema = {
        "actorKeyValueStoreSchemaVersion": 1,
        "collections": {
            "images": {"keyPrefix": "img-", "contentTypes": ["image/*"]},
            "report": {
                "key": "REPORT",
                "contentTypes": ["application/json"],
                "jsonSchema": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
            },
        },
    }
    store = new_store(alice, schema=schema)
    sid = store["id"]
    assert alice.put(rec_path(sid, "img-1"), content=b"\x89PNG", headers={"content-type": "image/png"}).status_code == 201
    assert_error(
        alice.put(rec_path(sid, "img-2"), content=b"hi", headers={"content-type": "text/plain"}),
        400,
        "schema-validation-failed",
    )
    assert alice.get(rec_path(sid, "img-2")).status_code == 404
    ok = alice.put(rec_path(sid, "REPORT"), json={"ok": True})
    assert ok.status_code == 201, ok.text
    for bad in (b'{"ok": "yes"}', b"{}", b"not json", b"[]"):
        r = alice.put(rec_path(sid, "REPORT"), content=bad, headers={"content-type": "application/json"})
        assert_error(r, 400, "schema-validation-failed")
    # gzip-encoded JSON is checked on its decoded form
    r = alice.put(
        rec_path(sid, "REPORT"),
        content=gzip.compress(b'{"ok": 1}'),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert_error(r, 400, "schema-validation-failed")
    assert alice.get(rec_path(sid, "REPORT")).json() == {"ok": True}
    # wrong content type for the JSON collection
    r = alice.put(rec_path(sid, "REPORT"), content=b'{"ok":true}', headers={"content-type": "text/plain"})
    assert_error(r, 400, "schema-validation-failed")
    # keys outside every collection are free
    assert alice.put(rec_path(sid, "other"), content=b"x", headers={"content-type": "text/plain"}).status_code == 201


# -- limits ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory, start_server):
    """A SQLite server with --max-record-bytes 1000000 (the limit checks are in the HTTP layer)."""
    return start_server(
        tmp_path_factory.mktemp("small"), "sqlite", "--rate-limits", "off", "--max-record-bytes", "1000000", in_process=True
    )


LIMIT = 1_000_000


def too_large(actual: int) -> str:
    return f"The POST payload is too large (limit: {LIMIT} bytes, actual length: {actual} bytes)."


def test_413_declared_length(small_server):
    with small_server.client() as c:
        sid = new_store(c)["id"]
        url = rec_path(sid, "big")
        assert c.put(url, content=b"o" * LIMIT).status_code == 201  # exactly the limit is fine
        r = c.put(url, content=b"x" * (LIMIT + 1))
        assert_error(r, 413, "request-too-large", too_large(LIMIT + 1))
        assert c.get(url).content == b"o" * LIMIT


def test_413_chunked_without_length(small_server):
    def gen() -> Iterator[bytes]:
        for _ in range(30):
            yield b"y" * 100_000

    with small_server.client() as c:
        sid = new_store(c)["id"]
        url = rec_path(sid, "chunked")
        c.put(url, content=b"old")
        r = c.put(url, content=gen())
        assert r.status_code == 413, r.text
        err = assert_error(r, 413, "request-too-large")
        assert err["message"].startswith(f"The POST payload is too large (limit: {LIMIT} bytes, actual length: ")
        actual = int(err["message"].rsplit(": ", 1)[1].split(" ")[0])
        assert actual > LIMIT
        assert c.get(url).content == b"old"
        # a chunked body under the limit is fine
        r = c.put(url, content=iter([b"a" * 1000, b"b" * 1000]))
        assert r.status_code == 201 and c.get(url).content == b"a" * 1000 + b"b" * 1000


def test_compression_bomb(small_server):
    bomb = gzip.compress(bytes(50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < LIMIT
    with small_server.client() as c:
        sid = new_store(c)["id"]
        url = rec_path(sid, "bomb")
        c.put(url, content=b"intact", headers={"content-type": "text/plain"})
        r = c.put(url, content=bomb, headers={"content-encoding": "gzip"})
        err = assert_error(r, 413, "request-too-large")
        assert err["message"].startswith(f"The POST payload is too large (limit: {LIMIT} bytes")
        r = c.get(url)
        assert r.content == b"intact" and r.headers["content-type"] == "text/plain"
        # and for brotli
        r = c.put(rec_path(sid, "bomb2"), content=brotli.compress(bytes(20 * 1024 * 1024)), headers={"content-encoding": "br"})
        assert_error(r, 413, "request-too-large")
        assert c.get(rec_path(sid, "bomb2")).status_code == 404
        # a compressed body under the decoded limit is fine even though it is large decoded... up to the limit
        ok = gzip.compress(bytes(LIMIT))
        assert c.put(rec_path(sid, "fits"), content=ok, headers={"content-encoding": "gzip"}).status_code == 201
        got = c.get(rec_path(sid, "fits"), headers={"accept-encoding": "identity"})
        assert got.content == bytes(LIMIT)


def test_store_json_body_cap(small_server):
    with small_server.client() as c:
        big = b'{"x":"' + b"a" * 9_437_184 + b'"}'
        r = c.post("/v2/key-value-stores", params={"name": unique()}, content=big, headers={"content-type": "application/json"})
        assert_error(r, 413, "request-too-large")


def test_sha_of_large_record(alice, store):
    body = os.urandom(3 * 1024 * 1024 + 17)
    url = rec_path(store["id"], "large")
    assert alice.put(url, content=body).status_code == 201
    got = alice.get(url).content
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()


def test_accept_encoding_negotiation(alice, store):
    plain = b"negotiate me " * 1000
    url = rec_path(store["id"], "neg")
    alice.put(url, content=brotli.compress(plain), headers={"content-encoding": "br"})
    for accept, sent_encoded in [
        ("gzip, deflate", False),
        ("gzip, br", True),
        ("BR", True),
        ("*", True),
        ("br;q=0", False),
        ("*;q=0", False),
        ("", False),
    ]:
        with alice.stream("GET", url, headers={"accept-encoding": accept}) as r:
            raw = b"".join(r.iter_raw())
            assert (r.headers.get("content-encoding") == "br") is sent_encoded, accept
            assert raw == (brotli.compress(plain) if sent_encoded else plain), accept
            assert r.headers["content-length"] == str(len(raw))
            assert "accept-encoding" in r.headers.get("vary", "").lower()
    # the ETag differs between the two forms, and each one's If-None-Match works
    e1 = alice.get(url, headers={"accept-encoding": "br"}).headers["etag"]
    e2 = alice.get(url, headers={"accept-encoding": "identity"}).headers["etag"]
    assert e1 != e2
    assert alice.get(url, headers={"accept-encoding": "identity", "if-none-match": e2}).status_code == 304
    assert alice.get(url, headers={"accept-encoding": "identity", "if-none-match": e1}).status_code == 200


def test_same_bytes_twice_and_concurrent_overwrites(alice, store):
    from concurrent.futures import ThreadPoolExecutor

    url = rec_path(store["id"], "same")
    for _ in range(2):
        assert alice.put(url, content=b"same bytes").status_code == 201
    assert alice.get(url).content == b"same bytes"
    bodies = [bytes([i]) * 100_000 for i in range(8)]

    def put(b: bytes) -> int:
        return alice.put(url, content=b).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(put, bodies)) == {201}
    assert alice.get(url).content in bodies


def test_a_content_type_longer_than_the_limit_is_refused(alice, store):
    """Kept with the record and listed with its key: 1,000 of 60,000 characters made each listing 60 MB (attack
    run: 20 listings at once, 71 MB -> 2.3 GB of server memory)."""
    from openkvs.api.records import CONTENT_TYPE_MAX

    url = rec_path(store["id"], "typed")
    longest = "a/" + "b" * (CONTENT_TYPE_MAX - 2)
    assert alice.put(url, content=b"x", headers={"content-type": longest}).status_code == 201
    assert alice.get(url).headers["content-type"] == longest
    r = alice.put(rec_path(store["id"], "over"), content=b"x", headers={"content-type": longest + "b"})
    assert_error(r, 400, "invalid-input")
    assert "more than 1,024" in r.json()["error"]["message"]
    assert alice.get(rec_path(store["id"], "over")).status_code == 404
