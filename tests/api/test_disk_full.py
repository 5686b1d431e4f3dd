"""A full or read-only disk under a running server (SQLite): writes get 507 insufficient-storage, never a 500;
reads, deletes and ZIP downloads keep working; one clear log line instead of tracebacks.

The disk is a small tmpfs mounted for the test (needs root, as in CI; elsewhere the tests skip with the reason).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.conftest import make_server, unavailable

MIB = 1024 * 1024


def mount_tmpfs(where: Path, size_mib: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(where)], capture_output=True, text=True
    )
    if out.returncode != 0:
        unavailable(f"cannot mount a small tmpfs to fill (needs root): {out.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/data on a 32 MiB tmpfs (the server's data dir: make_server uses tmp_path/data)."""
    disk = tmp_path / "data"
    mount_tmpfs(disk, 32)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def assert_507(r) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == 507, r.text
    assert r.json()["error"]["type"] == "insufficient-storage"


def test_full_disk_refuses_writes_with_507_and_still_reads_deletes_and_zips(tmp_path: Path, small_disk: Path) -> None:
    server = make_server(tmp_path, "sqlite", "--rate-limits", "off")
    try:
        c = server.client()
        sid = c.post("/v2/key-value-stores?name=full").json()["data"]["id"]
        statuses = []
        for i in range(400):  # 400 x 200 KB is far more than the disk holds
            r = c.put(f"/v2/key-value-stores/{sid}/records/big{i}", content=os.urandom(200_000))
            statuses.append(r.status_code)
            if r.status_code != 201:
                break
        assert statuses[-1] == 507 and 40 < len(statuses) < 400, statuses[-3:]  # records over 64 KiB (files)
        assert_507(r)
        for i in range(3000):  # records kept inline in the database, until they too are refused
            r = c.put(f"/v2/key-value-stores/{sid}/records/small{i}", content=os.urandom(2000))
            if r.status_code != 201:
                break
        assert_507(r)
        # reads go on
        assert c.get(f"/v2/key-value-stores/{sid}/records/big0").status_code == 200
        z = c.get(f"/v2/key-value-stores/{sid}/records")
        assert z.status_code == 200 and len(z.content) == int(z.headers["content-length"]) > 8 * MIB
        # and space can be freed through the API
        for i in range(10):
            assert c.delete(f"/v2/key-value-stores/{sid}/records/big{i}").status_code == 204
        assert c.get(f"/v2/key-value-stores/{sid}/records/big0").status_code == 404
        for i in range(50):
            assert c.delete(f"/v2/key-value-stores/{sid}/records/small{i}").status_code == 204
    finally:
        server.stop()
    log = server.log()
    assert "disk almost full" in log
    assert "Traceback" not in log, log[-3000:]


def test_read_only_filesystem_refuses_writes_with_507_and_keeps_reading(tmp_path: Path, small_disk: Path) -> None:
    """Uploads in progress live in data/tmp: a read-only filesystem there (EROFS), as when a disk is remounted
    read-only after errors, used to give 500 with a traceback for every record over 64 KiB."""
    server = make_server(tmp_path, "sqlite", "--rate-limits", "off")
    ro = small_disk / "tmp"
    try:
        c = server.client()
        sid = c.post("/v2/key-value-stores?name=ro").json()["data"]["id"]
        assert c.put(f"/v2/key-value-stores/{sid}/records/big", content=os.urandom(300_000)).status_code == 201
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
        try:
            r = c.put(f"/v2/key-value-stores/{sid}/records/big2", content=os.urandom(300_000))
            assert_507(r)
            assert len(c.get(f"/v2/key-value-stores/{sid}/records/big").content) == 300_000
        finally:
            subprocess.run(["umount", "-l", str(ro)], check=False)
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.parametrize("size", [1000, 200_000], ids=["inline", "file"])
def test_sqlite_translates_a_physically_full_disk(tmp_path: Path, size: int) -> None:
    """Without the reserve (reserve_bytes=0) the disk really fills: ENOSPC and SQLite's "database or disk is
    full" both become StorageFull (507), for records kept inline and for records kept in files."""
    from openkvs.storage.base import StorageFull
    from openkvs.storage.sqlite import SQLiteStorage
    from tests.storage.conftest import Body

    disk = tmp_path / "disk"
    mount_tmpfs(disk, 4)

    async def main() -> None:
        async with SQLiteStorage(disk / "data", reserve_bytes=0, background=False) as st:
            user = await st.create_user("alice")
            store = await st.create_store(user.id, "s", None, "k")
            with pytest.raises(StorageFull):
                for i in range(8 * MIB // size):
                    await st.put_record(store.id, f"r{i}", Body([os.urandom(size)]), "application/octet-stream", None)

    try:
        anyio.run(main)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
