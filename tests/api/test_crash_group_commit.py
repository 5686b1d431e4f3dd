"""kill -9 while groups of concurrent small writes are being committed together (group commit, issue 19): every
write the server answered with 201 is there after the restart, byte for byte, and every record there is one whole
body a client sent for its key (never a mix, a truncation or a record nobody wrote). 32 clients write 1 KiB
bodies, half to keys of their own (each written once), half overwriting a few shared keys, so that groups hold
writes to the same rows."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from functools import partial

import httpx
import pytest

from . import new_store, rec_path
from .crash import client, keys_of, kill_mid_storm

CLIENTS = 32
SHARED_KEYS = [f"shared-{i}" for i in range(6)]


def writer(
    url: str, token: str, sid: str, n: int, acked: dict[str, set[str]], sent: dict[str, set[str]],
    lock: threading.Lock, stop: threading.Event,
) -> None:
    rnd = random.Random(n)
    with client(url, token) as c:
        i = 0
        while not stop.is_set():
            key = rnd.choice(SHARED_KEYS) if rnd.random() < 0.5 else f"own-{n}-{i}"
            i += 1
            body = f"{key}:".encode() + os.urandom(1024)
            digest = hashlib.sha256(body).hexdigest()
            with lock:
                sent.setdefault(key, set()).add(digest)  # before sending: it may be stored without an answer
            try:
                r = c.put(rec_path(sid, key), content=body)
            except httpx.HTTPError:
                return  # the server is gone
            if r.status_code != 201:
                return
            with lock:
                acked.setdefault(key, set()).add(digest)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_during_group_commits(tmp_path, start_server, backend) -> None:
    s = start_server(tmp_path, backend, "--rate-limits", "off")
    with s.client() as c:
        sid = new_store(c)["id"]
    acked: dict[str, set[str]] = {}
    sent: dict[str, set[str]] = {}
    lock = threading.Lock()
    writers = [partial(writer, s.url, s.token, sid, n, acked, sent, lock) for n in range(CLIENTS)]

    def going() -> bool:
        with lock:
            return sum(map(len, acked.values())) >= 300

    kill_mid_storm(s, writers, going)  # SIGKILL with 32 writes in flight, once the storm is going
    with s.client() as c:
        listed = keys_of(c, sid)
        own_acked = {k for k in acked if k.startswith("own-")}
        missing = own_acked - set(listed)
        assert not missing, f"{len(missing)} of {len(own_acked)} acknowledged records lost: {sorted(missing)[:5]}"
        assert set(listed) <= set(sent), "a record nobody wrote"
        for key in listed:
            r = c.get(rec_path(sid, key))
            assert r.status_code == 200, key
            digest = hashlib.sha256(r.content).hexdigest()
            # a whole body sent for this key; for a key written once and answered, exactly that body
            assert digest in sent[key], f"{key}: bytes no client sent ({len(r.content)} bytes)"
            if key.startswith("own-") and key in acked:
                assert digest in acked[key], key
        for key in SHARED_KEYS:
            if key in acked:  # an acknowledged overwrite: the key holds that body or a later whole one
                assert key in listed, key
        # and the server takes writes again
        assert c.put(rec_path(sid, "after"), content=b"ok").status_code == 201
        assert c.get(rec_path(sid, "after")).content == b"ok"
