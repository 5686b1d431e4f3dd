"""kill -9 in the middle of writers putting and deleting the same keys (and of an upload of a new key that never
finishes): after the restart each store's ``stats.recordCount`` is the number of its keys, and ``openkvs check``
finds every count right. The count lives in the transaction of each write, so a crash can't split them."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import httpx
import pytest

from . import new_store, rec_path

pytestmark = pytest.mark.server_process

WRITERS = 4
STORM_WRITES = 40  # answered writes and deletes before the kill (the others are in flight then)
STORM_TIMEOUT = 120.0
KEYS = 24


def storm(url: str, token: str, sid: str, stop: threading.Event, done: list[int], errors: list[str]) -> None:
    rnd = random.Random()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        while not stop.is_set():
            key = f"k{rnd.randrange(KEYS)}"
            try:
                if rnd.random() < 0.4:
                    r = c.delete(rec_path(sid, key))
                else:
                    size = rnd.choice([rnd.randrange(0, 2000), rnd.randrange(60_000, 300_000), 2 << 20])
                    r = c.put(rec_path(sid, key), content=os.urandom(size))
            except httpx.HTTPError:
                return  # the server is gone
            if r.status_code not in (201, 204):
                errors.append(f"{r.status_code} {r.text[:200]}")
                return
            done.append(1)


def stalled_upload(url: str, token: str, sid: str, stop: threading.Event) -> None:
    """A new key whose upload is cut off by the kill: it must not be counted."""

    def body():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield os.urandom(256 * 1024)
        stop.wait(60)
        yield b"never acknowledged"

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        try:
            c.put(rec_path(sid, "cut-off"), content=body())
        except httpx.HTTPError:
            pass


def keys_of(c: httpx.Client, sid: str) -> list[str]:
    listed: list[str] = []
    start = None
    while True:
        params = {"exclusiveStartKey": start} if start else {}
        d = c.get(f"/v2/key-value-stores/{sid}/keys", params=params).json()["data"]
        listed += [i["key"] for i in d["items"]]
        if not d["isTruncated"]:
            return listed
        start = d["nextExclusiveStartKey"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "postgres+s3"])
def test_the_count_is_exact_after_kill_9(backend: str, tmp_path, start_server) -> None:  # type: ignore[no-untyped-def]
    s = start_server(tmp_path, backend, "--rate-limits", "off")
    with s.client() as c:
        sids = [new_store(c)["id"] for _ in range(2)]
        for i in range(10):  # a store nobody writes during the storm keeps its count too
            assert c.put(rec_path(sids[1], f"still-{i}"), content=b"x").status_code == 201
    stop = threading.Event()
    done: list[int] = []
    errors: list[str] = []
    threads = [threading.Thread(target=storm, args=(s.url, s.token, sids[0], stop, done, errors)) for _ in range(WRITERS)]
    threads.append(threading.Thread(target=stalled_upload, args=(s.url, s.token, sids[0], stop)))
    for t in threads:
        t.start()
    deadline = time.monotonic() + STORM_TIMEOUT  # until enough writes are answered, however loaded the machine
    while len(done) < STORM_WRITES and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not errors, errors
    s.stop(kill=True)  # SIGKILL, mid-write
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(done) >= STORM_WRITES, f"only {len(done)} writes answered in {STORM_TIMEOUT} s"
    s.start()
    with s.client() as c:
        for sid in sids:
            keys = keys_of(c, sid)
            assert "cut-off" not in keys
            assert c.get(f"/v2/key-value-stores/{sid}").json()["data"]["stats"]["recordCount"] == len(keys)
        assert len(keys_of(c, sids[1])) == 10
        # and it goes on counting after the restart
        assert c.put(rec_path(sids[0], "after-restart"), content=b"x").status_code == 201
        assert c.get(f"/v2/key-value-stores/{sids[0]}").json()["data"]["stats"]["recordCount"] == len(keys_of(c, sids[0]))
    check = subprocess.run([sys.executable, "-m", "openkvs", "check", *s.storage_args()], env=s.env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "record counts agree" in check.stdout, check.stdout + check.stderr
