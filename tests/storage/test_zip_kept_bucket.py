"""SQLite with record bytes in a bucket: a ZIP download lays out the batches of records whose bytes are in the
database from the headers SQLite kept (LocalBlock, CentralBlock), as SQLite alone does, while the records in the
bucket are read from it; the archive is byte for byte the old writer's (tests/zip_reference.py), and unzip finds
it sound."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from openkvs.api.download import _archive_bytes, _archive_size
from openkvs.storage.base import KeySelection
from openkvs.storage.sqlite import DB_NAME, SQLiteStorage
from openkvs.storage.sqlite.blobs import OBJECT_PATH
from tests import zip_reference

from .conftest import _sqlite_bucket
from .test_zip_kept import check_archive, fill, times

pytestmark = pytest.mark.anyio


async def test_records_in_the_database_come_laid_out_beside_objects_in_the_bucket(tmp_path: Path) -> None:
    async with asynccontextmanager(_sqlite_bucket)(tmp_path) as st:
        assert isinstance(st, SQLiteStorage) and st.blob_store is not None
        rnd = random.Random(11)
        store_id, recs = await fill(st, rnd, 300)
        await st.fill_zip_heads()
        conn = sqlite3.connect(st.data_dir / DB_NAME)
        in_bucket, in_db = conn.execute(
            "SELECT sum(path LIKE ? || '%'), sum(path IS NULL) FROM records", (OBJECT_PATH,)
        ).fetchone()
        conn.close()
        assert in_bucket > 0 and in_db > 200, (in_bucket, in_db)
        want = zip_reference.build_archive(await times(st, store_id, recs))
        kinds = await check_archive(st, store_id, want, rnd)  # the whole archive and random ranges of it
        assert kinds.get("LocalBlock", 0) > 0 and kinds.get("CentralBlock", 0) > 0, kinds
        assert kinds.get("records", 0) > 0, kinds  # the stretches with an object (or an encoded record)
        async with st.snapshot(store_id, KeySelection()) as snap:
            got = b"".join([c async for c in _archive_bytes(snap, 0, await _archive_size(snap))])
        assert got == want
        path = tmp_path / "a.zip"
        path.write_bytes(got)
        tested = subprocess.run(["unzip", "-tqq", str(path)], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout + tested.stderr
