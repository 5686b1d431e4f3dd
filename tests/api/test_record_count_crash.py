"""kill -9 in the middle of writers putting and deleting the same keys (and of an upload of a new key that never
finishes): after the restart each store's ``stats.recordCount`` is the number of its keys, its ZIP download is
whole with the Content-Length it announced (sized by the store's kept ZIP totals), and ``openkvs check`` finds
every count and total right. They live in the transaction of each write, so a crash can't split them."""

from __future__ import annotations

import gzip
import io
import os
import random
import threading
import zipfile
from functools import partial

import httpx
import pytest

from . import new_store, rec_path
from .crash import client, keys_of, kill_mid_storm, stalled_upload

pytestmark = pytest.mark.server_process

WRITERS = 4
STORM_WRITES = 40  # answered writes and deletes before the kill (the others are in flight then)
KEYS = 24


def storm(url: str, token: str, sid: str, stop: threading.Event, *, done: list[int], errors: list[str]) -> None:
    rnd = random.Random()
    with client(url, token) as c:
        while not stop.is_set():
            key = f"k{rnd.randrange(KEYS)}"
            try:
                if rnd.random() < 0.4:
                    r = c.delete(rec_path(sid, key))
                elif rnd.random() < 0.2:  # stored small, decoded bigger: the ZIP entry is the decoded bytes
                    data = gzip.compress(bytes(rnd.randrange(0, 50_000)))
                    r = c.put(rec_path(sid, key), content=data, headers={"Content-Encoding": "gzip"})
                else:
                    size = rnd.choice([rnd.randrange(0, 2000), rnd.randrange(60_000, 300_000), 2 << 20])
                    r = c.put(rec_path(sid, key), content=os.urandom(size))
            except httpx.HTTPError:
                return  # the server is gone
            if r.status_code not in (201, 204):
                errors.append(f"{r.status_code} {r.text[:200]}")
                return
            done.append(1)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "postgres+s3"])
def test_the_count_is_exact_after_kill_9(backend: str, tmp_path, start_server) -> None:  # type: ignore[no-untyped-def]
    s = start_server(tmp_path, backend, "--rate-limits", "off")
    with s.client() as c:
        sids = [new_store(c)["id"] for _ in range(2)]
        for i in range(10):  # a store nobody writes during the storm keeps its count too
            assert c.put(rec_path(sids[1], f"still-{i}"), content=b"x").status_code == 201
    done: list[int] = []
    errors: list[str] = []
    writers = [partial(storm, s.url, s.token, sids[0], done=done, errors=errors) for _ in range(WRITERS)]
    writers.append(partial(stalled_upload, s.url, s.token, sids[0], "cut-off"))  # a new key: it must not be counted
    kill_mid_storm(s, writers, lambda: len(done) >= STORM_WRITES, errors)
    with s.client() as c:
        for sid in sids:
            keys = keys_of(c, sid)
            assert "cut-off" not in keys
            assert c.get(f"/v2/key-value-stores/{sid}").json()["data"]["stats"]["recordCount"] == len(keys)
        assert len(keys_of(c, sids[1])) == 10
        # and it goes on counting after the restart
        assert c.put(rec_path(sids[0], "after-restart"), content=b"x").status_code == 201
        assert c.get(f"/v2/key-value-stores/{sids[0]}").json()["data"]["stats"]["recordCount"] == len(keys_of(c, sids[0]))
        for sid in sids:  # the archive: as long as announced, every entry whole
            r = c.get(f"/v2/key-value-stores/{sid}/records")
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content), r.headers
            with zipfile.ZipFile(io.BytesIO(r.content)) as z:
                assert z.testzip() is None
                assert z.namelist() == keys_of(c, sid)
    check = s.cli_result("check")
    assert check.returncode == 0 and "record counts agree, and the stores' ZIP totals" in check.stdout, (
        check.stdout + check.stderr
    )
