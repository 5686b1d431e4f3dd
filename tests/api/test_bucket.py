"""Record bytes in an S3 bucket, end to end, on both metadata backends: servers with ``--blob-store s3://...`` on
PostgreSQL and on SQLite (``--data-dir``) with a real S3 server (Swift's s3api, deploy/s3-swift.sh), seen through
HTTP and, independently, through the bucket itself and the metadata database. The S3 server is reached through a TCP
forwarder where a test needs it to fail (tests/tcpproxy.py). The servers run in this process, but where a test kills
one (``openkvs serve`` processes) or reads what the command line prints (``python -m openkvs`` processes)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sqlite3
import subprocess
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from openkvs.storage.bucket import S3BlobStore
from openkvs.storage.bucket.s3 import S3Bucket
from openkvs.storage.bucket.sigv4 import Credentials
from tests.conftest import DATABASE_URL, S3_BUCKET, S3_ENDPOINT, S3_ENV, Server
from tests.tcpproxy import TcpProxy

from . import new_store, rec_path

# The metadata backends under the bucket: where the record rows, the upload intents and the garbage list live.
BACKENDS = [pytest.param("postgres+s3", marks=pytest.mark.postgres), "sqlite+s3"]

MIB = 1024 * 1024


def bucket_objects(server: Server) -> dict[str, str]:
    """blob id -> sha256 of every object under the server's prefix, read straight from the bucket."""
    prefix = server.env["OPENKVS_BLOB_STORE"].split("/", 3)[3] + "/blobs/"

    async def go() -> dict[str, str]:
        creds = Credentials(S3_ENV["AWS_ACCESS_KEY_ID"], S3_ENV["AWS_SECRET_ACCESS_KEY"])
        b = S3Bucket(S3_BUCKET, endpoint=S3_ENDPOINT, region="us-east-1", credentials=creds, path_style=True)
        try:
            out = {}
            async for o in b.list(prefix):
                h = hashlib.sha256()
                async for piece in b.get(o.key, 0, o.size):
                    h.update(piece)
                out[o.key[len(prefix):]] = h.hexdigest()
            return out
        finally:
            await b.aclose()

    return asyncio.run(go())


def collect(server: Server, **kw: Any) -> int:
    """One garbage collection by another node or process on the server's metadata and bucket."""

    async def go() -> int:
        blobs = S3BlobStore(server.env["OPENKVS_BLOB_STORE"], endpoint=S3_ENDPOINT, path_style=True)
        if server.backend == "sqlite+s3":  # type: ignore[attr-defined]
            from openkvs.storage.sqlite import SQLiteStorage

            async with SQLiteStorage(server.data_dir, blob_store=blobs, background=False) as sqlite_node:
                return await sqlite_node.collect_garbage(**kw)
        from openkvs.storage.postgres import PostgresStorage

        node = PostgresStorage(DATABASE_URL, namespace=server.env["OPENKVS_DATABASE_SCHEMA"], blob_store=blobs)
        await node.open()
        try:
            return await node.collect_garbage(**kw)
        finally:
            await node.aclose()

    return asyncio.run(go())


def count(server: Server, sql: str) -> int:
    """``SELECT count(*) ...`` in the server's metadata database, read by another client."""
    if server.backend == "sqlite+s3":  # type: ignore[attr-defined]
        from openkvs.storage.sqlite import DB_NAME

        conn = sqlite3.connect(server.data_dir / DB_NAME)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    schema = server.env["OPENKVS_DATABASE_SCHEMA"]
    return int(subprocess.run(
        ["psql", DATABASE_URL, "-qtA", "-c", f'SET search_path = "{schema}"; {sql}'],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip())


def start(start_server: Any, tmp_path: Any, backend: str, in_process: bool = True, **kw: Any) -> Server:
    s = start_server(tmp_path, backend, "--rate-limits", "off", in_process=in_process, **kw)
    s.backend = backend
    return s


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", params=BACKENDS)
def s3_server(request, tmp_path_factory, start_server) -> Server:
    return start(start_server, tmp_path_factory.mktemp("s3"), request.param)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def test_bytes_are_in_the_bucket_and_come_back_exact(s3_server: Server) -> None:
    s = s3_server
    records = {
        "tiny": b"x",
        "at-threshold": os.urandom(64 * 1024),  # stays in the database (--blob-inline-max default)
        "above": os.urandom(64 * 1024 + 1),
        "parts": os.urandom(20 * MIB + 7),  # a multipart upload (8 MiB parts)
    }
    with s.client() as c:
        sid = new_store(c)["id"]
        before = bucket_objects(s)
        for key, data in records.items():
            r = c.put(rec_path(sid, key), content=data, headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 201, r.text
            if len(data) > 64 * 1024:  # 201: the object is complete in the bucket already
                assert sha(data) in bucket_objects(s).values()
        new = set(bucket_objects(s).values()) - set(before.values())
        assert new == {sha(records["above"]), sha(records["parts"])}
        if s.backend == "sqlite+s3":
            files = [p for p in (s.data_dir / "blobs").rglob("*") if p.is_file()]
            assert files == []  # no record file on the node's disk

        for key, data in records.items():
            r = c.get(rec_path(sid, key))
            assert r.status_code == 200 and r.content == data
            assert int(r.headers["content-length"]) == len(data)
        big = records["parts"]
        r = c.get(rec_path(sid, "parts"), headers={"Range": f"bytes={8 * MIB - 3}-{8 * MIB + 2}"})
        assert r.status_code == 206 and r.content == big[8 * MIB - 3 : 8 * MIB + 3]
        r = c.get(rec_path(sid, "parts"), headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.content == big[-5:]

        r = c.get(f"/v2/key-value-stores/{sid}/records")
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            assert z.testzip() is None
            assert {i.filename: z.read(i) for i in z.infolist()} == records
        # a ranged request of the archive is the same bytes as that slice of the whole
        whole = r.content
        lo = len(whole) // 2
        r = c.get(f"/v2/key-value-stores/{sid}/records", headers={"Range": f"bytes={lo}-{lo + MIB}",
                                                                  "If-Range": r.headers["etag"]})
        assert r.status_code == 206 and r.content == whole[lo : lo + MIB + 1]


def test_deleting_a_store_frees_its_objects_after_the_grace(s3_server: Server) -> None:
    s = s3_server
    with s.client() as c:
        sid = new_store(c)["id"]
        datas = [os.urandom(100_000 + i) for i in range(3)]
        for i, d in enumerate(datas):
            assert c.put(rec_path(sid, f"k{i}"), content=d).status_code == 201
        assert c.put(rec_path(sid, "k0"), content=os.urandom(100_000)).status_code == 201  # datas[0]: garbage
        mine = {sha(d) for d in datas}
        assert mine <= set(bucket_objects(s).values())
        assert c.delete(f"/v2/key-value-stores/{sid}").status_code == 204
    assert mine <= set(bucket_objects(s).values())  # within the grace period (60 s) nothing is deleted
    collect(s, now=datetime.now(UTC) + timedelta(seconds=61))
    assert not mine & set(bucket_objects(s).values())
    if s.backend == "postgres+s3":
        assert count(s, "SELECT count(*) FROM garbage") == 0


def test_blobs_commands_check_and_move_the_bytes(tmp_path, start_server) -> None:
    s = start(start_server, tmp_path, "sqlite+s3")
    with s.client() as c:
        sid = new_store(c)["id"]
        datas = {f"k{i}": os.urandom(100_000 * (i + 1)) for i in range(3)}
        for k, d in datas.items():
            assert c.put(rec_path(sid, k), content=d).status_code == 201
        assert " 0 orphans, 0 records without their object" in s.cli("blobs", "fsck")
        assert "moved 3 records" in s.cli("blobs", "migrate", "--to", "database")
        assert count(s, f"SELECT count(*) FROM records WHERE store_id = '{sid}' AND path LIKE 's3:%'") == 0
        for k, d in datas.items():
            assert c.get(rec_path(sid, k)).content == d
        assert "moved 3 records" in s.cli("blobs", "migrate", "--to", "bucket")
        assert "moved 0 records" in s.cli("blobs", "migrate", "--to", "bucket")  # done: a rerun finds nothing
        for k, d in datas.items():
            assert c.get(rec_path(sid, k)).content == d


def test_kill_9_mid_upload_leaves_the_old_record_and_the_orphan_is_swept(tmp_path, start_server, backend) -> None:
    s = start(start_server, tmp_path, backend, in_process=False)  # a process, to kill
    stop = threading.Event()
    with s.client() as c:
        sid = new_store(c)["id"]
        old = os.urandom(200_000)
        assert c.put(rec_path(sid, "stable"), content=old).status_code == 201

    def stalled() -> None:  # 12 MiB (a multipart upload with its first part sent), then nothing
        def body():
            for _ in range(12):
                yield os.urandom(MIB)
            stop.wait(60)
            yield b"never acknowledged"

        with s.client() as c2:
            try:
                c2.put(rec_path(sid, "stable"), content=body())
            except httpx.HTTPError:
                pass

    t = threading.Thread(target=stalled)
    t.start()
    deadline = time.monotonic() + 30
    while count(s, "SELECT count(*) FROM uploads WHERE upload_id IS NOT NULL") != 1:
        assert time.monotonic() < deadline, "the upload did not start"
        time.sleep(0.1)
    time.sleep(0.5)  # the first part goes up
    s.stop(kill=True)
    stop.set()
    t.join(60)
    s.start()
    with s.client() as c:
        r = c.get(rec_path(sid, "stable"))
        assert r.status_code == 200 and r.content == old
    assert count(s, "SELECT count(*) FROM uploads") == 1  # the intent names what the dead upload left
    assert collect(s, now=datetime.now(UTC) + timedelta(hours=1, minutes=1)) == 1
    assert count(s, "SELECT count(*) FROM uploads") == 0
    assert set(bucket_objects(s).values()) == {sha(old)}  # only the live record's object is left


@pytest.fixture
def proxied(tmp_path, start_server, backend) -> tuple[Server, TcpProxy]:
    host, port = S3_ENDPOINT.split("//")[1].split(":")
    proxy = TcpProxy(host, int(port))
    s = start(start_server, tmp_path, backend, env_extra={"OPENKVS_S3_ENDPOINT": proxy.url})
    yield s, proxy
    proxy.down()


def test_s3_outage_gives_503_with_retry_after_and_loses_nothing(proxied) -> None:
    s, proxy = proxied
    with s.client() as c:
        sid = new_store(c)["id"]
        data = os.urandom(300_000)
        assert c.put(rec_path(sid, "big"), content=data).status_code == 201
        proxy.down()
        for r in (
            c.put(rec_path(sid, "big"), content=os.urandom(300_000)),
            c.put(rec_path(sid, "huge"), content=os.urandom(10 * MIB)),
            c.get(rec_path(sid, "big")),
        ):
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"].isdigit()
            assert r.json()["error"]["type"] == "service-unavailable"
        # records that stay in the database work on
        assert c.put(rec_path(sid, "small"), content=b"still here").status_code == 201
        assert c.get(rec_path(sid, "small")).content == b"still here"
        proxy.up()
        r = c.get(rec_path(sid, "big"))
        assert r.status_code == 200 and r.content == data  # the acknowledged write survived the outage
        assert c.put(rec_path(sid, "big"), content=b"y" * 300_000).status_code == 201
    assert "Traceback" not in s.log()


def test_a_missing_bucket_is_named_in_the_log_and_keeps_the_node_unready(tmp_path, start_server, backend) -> None:
    s = start(start_server, tmp_path, backend, env_extra={"OPENKVS_BLOB_STORE": "s3://openkvs-test-never-made/x"})
    with s.anon() as c:
        r = c.get("/health/ready")
    assert r.status_code == 503, r.text
    assert r.json()["checks"]["bucket"] == "refused" and "no such bucket" in r.json()["reason"], r.text
    assert "never-made" not in r.text  # a public answer: not the bucket's name
    assert "openkvs-test-never-made" in s.log() and "no such bucket" in s.log()  # the operator's log says which


def test_readiness_follows_the_bucket(proxied) -> None:
    s, proxy = proxied
    with s.anon() as c:
        assert c.get("/health/ready").json()["checks"]["bucket"] == "ok"
        proxy.down()
        _until(lambda: c.get("/health/ready").status_code == 503)
        assert c.get("/health/ready").json()["checks"]["bucket"] == "unreachable"
        proxy.up()
        _until(lambda: c.get("/health/ready").status_code == 200)


def _until(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the (generous) deadline"
        time.sleep(0.1)


def test_zip_aborts_when_the_bucket_fails_mid_download(proxied) -> None:
    s, proxy = proxied
    with s.client() as c:
        sid = new_store(c)["id"]
        for i in range(4):
            assert c.put(rec_path(sid, f"k{i}"), content=os.urandom(16 * MIB)).status_code == 201
    with s.socket_client() as c, c.stream("GET", f"/v2/key-value-stores/{sid}/records") as r:  # read as it streams
        assert r.status_code == 200
        length = int(r.headers["content-length"])
        got = 0
        with pytest.raises(httpx.HTTPError):
            for piece in r.iter_raw():
                got += len(piece)
                if got >= MIB and proxy.forwarded:
                    proxy.down()
        assert got < length  # cut short: the client sees an incomplete archive, never a wrong one


def test_s3_failing_mid_upload_keeps_the_old_record_and_the_sweeper_cleans_up(proxied) -> None:
    s, proxy = proxied
    with s.client() as c:
        sid = new_store(c)["id"]
        old = os.urandom(300_000)
        assert c.put(rec_path(sid, "k"), content=old).status_code == 201

        def body():
            for i in range(30):
                if i == 12:  # the first part is in the bucket, the second on its way
                    proxy.down()
                yield os.urandom(MIB)

        try:  # over the socket: the body goes as it is made (the client without one reads it whole first)
            with s.socket_client() as sending:
                r = sending.put(rec_path(sid, "k"), content=body())
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"].isdigit()
        except httpx.TransportError:
            pass  # the server answered 503 and closed while the client still sent: also no acknowledgement
        proxy.up()
        r = c.get(rec_path(sid, "k"))
        assert r.status_code == 200 and r.content == old
    assert count(s, "SELECT count(*) FROM uploads") == 1  # the upload could not be aborted during the outage
    assert collect(s, now=datetime.now(UTC) + timedelta(hours=1, minutes=1)) == 1
    assert set(bucket_objects(s).values()) == {sha(old)}
