"""The ZIP download (API.md section 8) end to end over a real socket, checked by independent readers."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import httpx
import pytest

from openkvs import signing
from tests.conftest import IN_CI, Server

SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "title": "shots",
    "collections": {
        "images": {"title": "Images", "keyPrefix": "img-", "contentTypes": ["image/*"]},
        "report": {"title": "Report", "key": "REPORT"},
    },
}


def make_store(server: Server, name: str, schema: dict | None = None) -> dict:
    with server.client() as c:
        r = c.post("/v2/key-value-stores", params={"name": name}, json={"schema": schema} if schema else None)
        assert r.status_code == 201, r.text
        return r.json()["data"]


def put(c: httpx.Client, store_id: str, key: str, body: bytes, content_type: str = "application/octet-stream",
        encoding: str | None = None) -> None:
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    r = c.put(f"/v2/key-value-stores/{store_id}/records/{key}", content=body, headers=headers)
    assert r.status_code == 201, r.text


def download(c: httpx.Client, store_id: str, **params: str) -> httpx.Response:
    return c.get(f"/v2/key-value-stores/{store_id}/records", params=params)


def entries(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.testzip() is None
        return {i.filename: z.read(i) for i in z.infolist()}


@pytest.fixture
def filled(server: Server) -> tuple[Server, dict, dict[str, bytes]]:
    store = make_store(server, "shots", SCHEMA)
    records = {
        "REPORT": b'{"ok": true}',
        "img-001": os.urandom(3000),
        "img-002": os.urandom(70_000),  # past the inline threshold: a file on the embedded backend
        "log.txt": b"line\n" * 1000,
        "other": b"",
    }
    with server.client() as c:
        for key, body in records.items():
            ctype = "image/png" if key.startswith("img-") else "application/json" if key == "REPORT" else "text/plain"
            put(c, store["id"], key, body, ctype)
    return server, store, records


def test_archive_holds_every_record_in_key_order(filled: tuple[Server, dict, dict[str, bytes]]) -> None:
    server, store, records = filled
    with server.client() as c:
        r = download(c, store["id"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == 'attachment; filename="shots.zip"'
    assert r.headers["accept-ranges"] == "bytes"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.headers["etag"].startswith('"')
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert [i.filename for i in z.infolist()] == sorted(records)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    assert entries(r.content) == records


def test_same_records_give_same_bytes_and_etag(filled: tuple[Server, dict, dict[str, bytes]]) -> None:
    server, store, _ = filled
    with server.client() as c:
        first, second = download(c, store["id"]), download(c, store["id"])
        assert first.content == second.content
        assert first.headers["etag"] == second.headers["etag"]
        put(c, store["id"], "log.txt", b"changed")
        third = download(c, store["id"])
    assert third.headers["etag"] != first.headers["etag"]
    assert entries(third.content)["log.txt"] == b"changed"


def test_prefix_collection_and_both(filled: tuple[Server, dict, dict[str, bytes]]) -> None:
    server, store, records = filled
    with server.client() as c:
        assert set(entries(download(c, store["id"], prefix="img-").content)) == {"img-001", "img-002"}
        assert set(entries(download(c, store["id"], collection="images").content)) == {"img-001", "img-002"}
        assert set(entries(download(c, store["id"], collection="report").content)) == {"REPORT"}
        assert set(entries(download(c, store["id"], collection="images", prefix="img-00").content)) == {
            "img-001",
            "img-002",
        }
        assert set(entries(download(c, store["id"], collection="images", prefix="img-001").content)) == {"img-001"}
        assert entries(download(c, store["id"], collection="report", prefix="img-").content) == {}
        empty = download(c, store["id"], prefix="nothing-here")
    assert empty.status_code == 200
    assert entries(empty.content) == {}
    assert len(empty.content) == 22  # just the end of central directory record


def test_collection_errors(filled: tuple[Server, dict, dict[str, bytes]]) -> None:
    server, store, _ = filled
    plain = make_store(server, "plain")
    with server.client() as c:
        unknown = download(c, store["id"], collection="nope")
        no_schema = download(c, plain["id"], collection="images")
    for r in (unknown, no_schema):
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid-input"
        assert r.json()["error"]["message"].startswith("Invalid input: ")


def test_gzip_encoded_record_appears_decoded(server: Server) -> None:
    store = make_store(server, "enc")
    plain = b"compress me " * 5000
    with server.client() as c:
        put(c, store["id"], "page.html", gzip.compress(plain), "text/html", encoding="gzip")
        r = download(c, store["id"])
    assert entries(r.content) == {"page.html": plain}


def test_independent_readers_accept_the_archive(filled: tuple[Server, dict, dict[str, bytes]], tmp_path: Path) -> None:
    server, store, records = filled
    with server.client() as c:
        path = tmp_path / "a.zip"
        path.write_bytes(download(c, store["id"]).content)
    for tool, args in (("unzip", ["-t"]), ("zipinfo", []), ("bsdtar", ["-tf"])):
        if shutil.which(tool) is None:
            if IN_CI:
                pytest.fail(f"{tool} is missing in CI")
            continue
        out = subprocess.run([tool, *args, str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (tool, out.stdout, out.stderr)
        for key in records:
            assert key in out.stdout
    if shutil.which("unzip"):
        dest = tmp_path / "x"
        subprocess.run(["unzip", "-q", str(path), "-d", str(dest)], check=True, timeout=60)
        assert {p.name: p.read_bytes() for p in dest.iterdir()} == records


def test_ranges_if_range_and_head(filled: tuple[Server, dict, dict[str, bytes]]) -> None:
    server, store, _ = filled
    with server.client() as c:
        full = download(c, store["id"])
        size, etag = len(full.content), full.headers["etag"]
        url = f"/v2/key-value-stores/{store['id']}/records"
        part = c.get(url, headers={"Range": "bytes=100-4999", "If-Range": etag})
        assert part.status_code == 206
        assert part.content == full.content[100:5000]
        assert part.headers["content-range"] == f"bytes 100-4999/{size}"
        assert part.headers["content-length"] == "4900"
        tail = c.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == full.content[-10:]
        stale = c.get(url, headers={"Range": "bytes=100-200", "If-Range": '"stale"'})
        assert stale.status_code == 200 and stale.content == full.content
        bad = c.get(url, headers={"Range": f"bytes={size}-"})
        assert bad.status_code == 416
        assert bad.headers["content-range"] == f"bytes */{size}"
        assert bad.json()["error"]["type"] == "invalid-range"
        head = c.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(size)
        assert head.headers["etag"] == etag


def test_signature_access(filled: tuple[Server, dict, dict[str, bytes]]) -> None:
    server, store, records = filled
    secret = store["urlSigningSecretKey"]
    url = f"/v2/key-value-stores/{store['id']}/records"
    with server.anon() as anon:
        assert anon.get(url).status_code == 401
        # the store object's own recordsPublicUrl works as it is
        public = httpx.get(store["recordsPublicUrl"], timeout=30)
        assert public.status_code == 200 and entries(public.content) == records
        never = signing.content_signature(secret, store["id"], 0)
        assert anon.get(url, params={"signature": never.rstrip("=")}).status_code == 200
        expired = signing.content_signature(secret, store["id"], 1000)
        other = signing.content_signature(secret, "someOtherStoreId1", 0)
        tampered = never[:-3] + ("A" if never[-3] != "A" else "B") + never[-2:]
        for sig in (expired, other, tampered, "garbage", "%00", "A" * 5000):
            r = anon.get(url, params={"signature": sig})
            assert r.status_code == 403, sig
            assert r.json()["error"]["type"] == "permission-denied"


def test_missing_store_and_wrong_method(server: Server) -> None:
    with server.client() as c:
        missing = c.get("/v2/key-value-stores/aaaaaaaaaaaaaaaaa/records")
        assert missing.status_code == 404
        assert missing.json()["error"] == {"type": "record-not-found", "message": "Key-value Store was not found"}
        store = make_store(server, "m")
        wrong = c.post(f"/v2/key-value-stores/{store['id']}/records")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["message"] == (
        "This API end-point can only be accessed using the following HTTP methods: OPTIONS,GET"
    )
    assert wrong.headers["allow"] == "OPTIONS,GET,HEAD"  # HEAD is served too (RFC 9110), though Apify's message omits it


def test_resume_with_curl_is_byte_identical(server: Server, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    store = make_store(server, "big")
    with server.client() as c:
        for i in range(8):
            put(c, store["id"], f"part-{i}", os.urandom(1_000_000))
        full = download(c, store["id"]).content
    # A first attempt that breaks off halfway...
    out = tmp_path / "archive.zip"
    with server.socket_client() as c, c.stream("GET", f"/v2/key-value-stores/{store['id']}/records") as r:
        with out.open("wb") as f:
            for chunk in r.iter_bytes():
                f.write(chunk)
                if f.tell() >= len(full) // 2:
                    break
    assert 0 < out.stat().st_size < len(full)
    # ...then curl continues where it stopped.
    subprocess.run(
        ["curl", "-sS", "-f", "-C", "-", "-H", f"Authorization: Bearer {server.token}", "-o", str(out),
         f"{server.url}/v2/key-value-stores/{store['id']}/records"],
        check=True, timeout=120,
    )
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(full).digest()


def test_snapshot_holds_while_writers_write(server: Server) -> None:
    store = make_store(server, "snap")
    originals = {f"r-{i:02d}": os.urandom(600_000) for i in range(20)}
    with server.client() as c:
        for key, body in originals.items():
            put(c, store["id"], key, body)
        expected = download(c, store["id"]).content
        got = bytearray()
        reader = server.socket_client()  # the archive read as it streams, over the server's socket
        with reader, reader.stream("GET", f"/v2/key-value-stores/{store['id']}/records") as r:
            it = r.iter_bytes()
            got += next(it)
            with server.client() as writer:
                for i, key in enumerate(originals):
                    if i % 3 == 0:
                        assert writer.delete(f"/v2/key-value-stores/{store['id']}/records/{key}").status_code == 204
                    else:
                        put(writer, store["id"], key, b"new bytes")
                put(writer, store["id"], "a-new-first-key", b"x")
            for chunk in it:
                got += chunk
    assert bytes(got) == expected
    assert entries(bytes(got)) == originals


def test_disconnect_mid_download_leaves_server_healthy(server: Server) -> None:
    store = make_store(server, "drop")
    with server.client() as c:
        for i in range(10):
            put(c, store["id"], f"k{i}", os.urandom(1_000_000))
    for _ in range(5):
        with server.socket_client() as c, c.stream("GET", f"/v2/key-value-stores/{store['id']}/records") as r:
            next(r.iter_bytes())
    with server.client() as c:
        r = download(c, store["id"])
        assert r.status_code == 200 and len(entries(r.content)) == 10
        assert c.get(f"/v2/key-value-stores/{store['id']}/records/k1").status_code == 200
    assert "Traceback" not in server.log()
