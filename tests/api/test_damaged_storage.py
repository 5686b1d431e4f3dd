"""Damaged storage: start-up refuses with one clear line (an emptied database, a read-only data dir, PostgreSQL
down); a record whose file is gone is answered 503 storage-damaged with a request id that a log line names, never
a 500; ``openkvs check`` finds what is damaged. `serve` runs as a process (its start-up is what refuses); the other
commands and the servers that fill a storage for them run in this process (tests/clirun.py: the same exit codes
and output)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.test_disk_full import mount_tmpfs
from tests.clirun import openkvs_here
from tests.conftest import DATABASE_URL, free_port, make_server, postgres_reachable, unavailable


def openkvs(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENKVS_") or k.startswith("OPENKVS_TEST_")}
    try:
        return subprocess.run(
            [sys.executable, "-m", "openkvs", *args], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"openkvs {' '.join(args)} did not exit (it started instead of refusing)")


def assert_refused(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for w in words:
        assert w in out.stderr


def serve(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return openkvs("serve", "--port", str(free_port()), "--data-dir", str(data_dir), timeout=20)


def test_an_emptied_database_is_refused_not_a_new_install(tmp_path: Path) -> None:
    d = tmp_path / "data"
    assert openkvs_here("migrate", "--data-dir", str(d)).returncode == 0
    assert openkvs_here("users", "create", "alice", "--data-dir", str(d)).returncode == 0
    (d / "openkvs.sqlite3").write_bytes(b"")  # emptied (a bad restore, a full disk at the wrong moment)
    for suffix in ("-wal", "-shm"):
        (d / f"openkvs.sqlite3{suffix}").unlink(missing_ok=True)
    out = serve(d)
    assert_refused(out, "holds no openkvs database")
    assert "Created user" not in out.stdout


def test_a_read_only_data_dir_is_refused_at_start(tmp_path: Path) -> None:
    d = tmp_path / "data"
    mount_tmpfs(d, 8)
    try:
        assert openkvs_here("migrate", "--data-dir", str(d)).returncode == 0
        assert openkvs_here("users", "create", "alice", "--data-dir", str(d)).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        assert_refused(serve(d), "read-only")
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_postgres_down_at_start_is_one_line(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    assert_refused(openkvs("serve", "--port", str(free_port()), "--database-url", dead), "PostgreSQL")


def test_a_missing_record_file_is_503_with_a_request_id_in_the_log(tmp_path: Path) -> None:
    server = make_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    try:
        c = server.client()
        sid = c.post("/v2/key-value-stores?name=dmg").json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{sid}/records/gone", content=os.urandom(300_000)).status_code == 201
        assert c.put(f"/v2/key-value-stores/{sid}/records/kept", content=b"still here").status_code == 201
        (blob,) = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
        blob.unlink()
        for url in (f"/v2/key-value-stores/{sid}/records/gone", f"/v2/key-value-stores/{sid}/records"):
            r = c.get(url)
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["type"] == "storage-damaged" and "Retry-After" not in r.headers
            request_id = error["message"].rsplit("request id ", 1)[1].rstrip(").")
            assert request_id in server.log()
        assert c.get(f"/v2/key-value-stores/{sid}/records/kept").content == b"still here"
    finally:
        server.stop()
    log = server.log()
    assert "'gone'" in log and "is missing" in log and "Traceback" not in log, log[-3000:]
    # and openkvs check names it
    out = openkvs_here("check", "--data-dir", str(server.data_dir))
    assert out.returncode == 1 and f"record {sid}/gone: its file" in out.stdout, out.stdout + out.stderr


def test_check_sqlite_ok_then_finds_a_short_file_and_page_damage(tmp_path: Path) -> None:
    server = make_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    try:
        c = server.client()
        sid = c.post("/v2/key-value-stores?name=chk").json()["data"]["id"]
        for i in range(200):
            assert c.put(f"/v2/key-value-stores/{sid}/records/r{i}", content=os.urandom(3000)).status_code == 201
        assert c.put(f"/v2/key-value-stores/{sid}/records/big", content=os.urandom(100_000)).status_code == 201
    finally:
        server.stop()
    d = server.data_dir
    out = openkvs_here("check", "--data-dir", str(d))
    assert out.returncode == 0 and out.stdout.startswith("ok:"), out.stdout + out.stderr
    (blob,) = [p for p in (d / "blobs").rglob("*") if p.is_file()]
    with open(blob, "r+b") as f:
        f.truncate(1000)
    out = openkvs_here("check", "--data-dir", str(d))
    assert out.returncode == 1, out.stdout
    assert f"record {sid}/big: its file" in out.stdout and "has 1000 bytes, not 100000" in out.stdout
    db = d / "openkvs.sqlite3"
    with open(db, "r+b") as f:  # scribble over a page in the middle of the records' data
        f.seek(40 * 4096)
        f.write(b"\xff" * 4096)
    out = openkvs_here("check", "--data-dir", str(d))
    assert out.returncode == 1, out.stdout
    assert "openkvs.sqlite3" in out.stdout  # integrity_check's findings (or the error reading the damaged page)


def test_check_postgres_ok_then_finds_a_missing_chunk(tmp_path: Path) -> None:
    if not postgres_reachable():
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    server = make_server(tmp_path, "postgres", "--rate-limits", "off", in_process=True)
    schema = server.env["OPENKVS_DATABASE_SCHEMA"]
    args = ["--database-url", DATABASE_URL, "--database-schema", schema]
    try:
        c = server.client()
        sid = c.post("/v2/key-value-stores?name=chk").json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{sid}/records/big", content=os.urandom(3_000_000)).status_code == 201
        assert c.put(f"/v2/key-value-stores/{sid}/records/small", content=b"x").status_code == 201
        out = openkvs_here("check", *args)
        assert out.returncode == 0 and "version" in out.stdout, out.stdout + out.stderr
        import anyio
        import asyncpg

        async def drop_chunk() -> None:
            conn = await asyncpg.connect(DATABASE_URL, server_settings={"search_path": schema})
            try:
                await conn.execute(
                    "DELETE FROM blob_chunks WHERE seq = 1 AND blob_id = (SELECT blob_id FROM records WHERE key = 'big')"
                )
            finally:
                await conn.close()

        anyio.run(drop_chunk)
        out = openkvs_here("check", *args)
        assert out.returncode == 1 and f"record {sid}/big:" in out.stdout, out.stdout + out.stderr
    finally:
        server.stop()
        import anyio
        import asyncpg

        async def drop_schema() -> None:
            conn = await asyncpg.connect(DATABASE_URL)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        anyio.run(drop_schema)


def test_a_record_in_a_bucket_read_without_blob_store_is_503_and_the_log_says_why(tmp_path: Path) -> None:
    """README: a node started without --blob-store can't read records that are in the bucket, "503, and the log
    says why". The record is made one of the bucket's as a node with --blob-store would (its path s3:<id>)."""
    import sqlite3

    server = make_server(tmp_path, "sqlite", "--rate-limits", "off", in_process=True)
    try:
        c = server.client()
        sid = c.post("/v2/key-value-stores?name=elsewhere").json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{sid}/records/obj", content=os.urandom(100_000)).status_code == 201
        db = sqlite3.connect(server.data_dir / "openkvs.sqlite3")
        with db:
            db.execute("UPDATE records SET path = 's3:7' WHERE store_id = ? AND key = 'obj'", (sid,))
        db.close()
        r = c.get(f"/v2/key-value-stores/{sid}/records/obj")
        assert r.status_code == 503 and r.headers["Retry-After"], r.text
    finally:
        server.stop()
    log = server.log()
    assert "'obj'" in log and "no --blob-store" in log and "Traceback" not in log, log[-3000:]
