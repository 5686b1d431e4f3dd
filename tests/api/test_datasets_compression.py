"""Compressed exports (API-datasets.md section 7: "Responses may be compressed (gzip, br) when the request's
Accept-Encoding allows; compression must flush as it goes"), over a real socket: the decoded body is the identity
body byte for byte, every format but xlsx (a ZIP already), decodable piece by piece while it streams, and a
client that accepts neither (or sends no Accept-Encoding, as curl) gets the identity bytes."""

from __future__ import annotations

import zlib

import brotli
import httpx
import pytest

from openkvs import compress
from tests.conftest import TLS

from . import unique

ITEMS = [{"url": f"https://example.com/p/{i}", "title": f"Product {i} é", "price": i / 7, "tags": ["a", "b"],
          "shop": {"city": "Prague"}, "ok": i % 2 == 0} for i in range(3000)]


@pytest.fixture(scope="module")
def ds(sqlite_server):
    s = sqlite_server
    with s.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("gz")}).json()["data"]["id"]
        assert c.post(f"/v2/datasets/{did}/items", json=ITEMS).status_code == 201
    return s, did


def raw_get(s, did: str, params: dict, accept: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {s.token}"}
    if accept is not None:
        headers["Accept-Encoding"] = accept
    # a transport that leaves the body as sent: httpx would decode it, and sends its own Accept-Encoding
    with httpx.Client(base_url=s.url, timeout=60, verify=TLS) as c:
        req = c.build_request("GET", f"/v2/datasets/{did}/items", params=params, headers=headers)
        if accept is None:
            del req.headers["Accept-Encoding"]
        r = c.send(req, stream=True)
        r._content = b"".join(r.iter_raw())
        return r


def decode(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return zlib.decompress(data, 31)
    return brotli.decompress(data)


PARAMS = [{"format": "json"}, {"format": "jsonl"}, {"format": "json", "clean": "1", "desc": "1"},
          {"format": "csv"}, {"format": "html"}, {"format": "xml"}, {"format": "rss"},
          {"format": "csv", "unwind": "tags"}]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: "-".join(p.values()))
def test_gzip_and_br_decode_to_the_identity_bytes(ds, params):
    s, did = ds
    plain = raw_get(s, did, params, None)
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    for accept, want in [("gzip", "gzip"), ("br", "br"), ("gzip, deflate, br", "br"), ("br;q=0.5, gzip", "gzip"),
                         ("*", "br"), ("identity", None), ("gzip;q=0, br;q=0", None), ("deflate", None)]:
        r = raw_get(s, did, params, accept)
        assert r.status_code == 200
        assert r.headers.get("content-encoding") == want, accept
        body = decode(want, r.content) if want else r.content
        assert body == plain.content, accept
        if want:
            assert len(r.content) < len(plain.content) / 2
        head = httpx.head(f"{s.url}/v2/datasets/{did}/items", params=params,
                          headers={"Authorization": f"Bearer {s.token}", "Accept-Encoding": accept})
        assert head.headers.get("content-encoding") == want  # HEAD says what GET sends


def test_xlsx_is_never_compressed(ds):
    s, did = ds
    r = raw_get(s, did, {"format": "xlsx"}, "gzip, br")
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert r.content[:2] == b"PK"


def br_process(d, data: bytes) -> bytes:
    """All the output for ``data`` (the binding hands it out in pieces of about 32 KiB)."""
    out = d.process(data)
    while more := d.process(b""):
        out += more
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_each_piece_is_flushed(encoding):
    """What came out so far decodes to exactly what went in so far, piece by piece (big pieces go through a
    worker thread, small ones not): a client reads an export as it streams."""
    inputs = [b"[", b"x" * 10, ("".join(f'{{"i":{i}}},' for i in range(20_000))).encode(), b"", b"]"]

    async def pieces():
        for piece in inputs:
            yield piece

    d = zlib.decompressobj(31) if encoding == "gzip" else brotli.Decompressor()
    decoded, i = b"", 0
    async for out in compress.compress(pieces(), encoding):
        decoded += d.decompress(out) if encoding == "gzip" else br_process(d, out)
        while i < len(inputs) and not inputs[i]:
            i += 1
        if i < len(inputs):
            i += 1
        assert decoded == b"".join(inputs[:i])
    assert decoded == b"".join(inputs)
    assert (d.eof if encoding == "gzip" else d.is_finished())


def test_choose():
    assert compress.choose(None) is None
    assert compress.choose("") is None
    assert compress.choose("identity, deflate") is None
    assert compress.choose("GZIP") == "gzip"
    assert compress.choose("x-gzip") == "gzip"
    assert compress.choose("gzip;q=0.9, br;q=0.8") == "gzip"
    assert compress.choose("gzip, br") == "br"
    assert compress.choose("*;q=0.1, br;q=0") == "gzip"
    # one rating for records too (api/records.py): a coding's own entry, else "*"'s, q=0 refusing
    assert compress.accepts("*, gzip;q=0", "gzip") is False
    assert compress.accepts("gzip;q=0, *", "gzip") is False
    assert compress.accepts("*", "deflate") is True
    assert compress.accepts("x-gzip", "gzip") is True
    assert compress.accepts("br;q=0.001", "br") is True
    assert compress.accepts("identity", "gzip") is False
    assert compress.accepts(None, "gzip") is False
    assert compress.accepts("gzip;q=0.000, *;q=1", "gzip") is False
    assert compress.choose("br;q=oops, gzip;q=2") is None  # malformed or out-of-range q: not acceptable
