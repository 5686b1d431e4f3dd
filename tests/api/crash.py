"""What the kill -9 tests share (test_crash*.py, test_record_count_crash.py, test_datasets_crash.py): writer threads
started against a server, SIGKILL once enough writes were answered (however long a loaded machine takes), the
server started again on the same data; an upload that is certainly in flight at the kill; a store's whole key
listing."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from tests.conftest import TLS, Server

from . import rec_path

# Until this many seconds have passed, the storm is given time to get going; a machine that answers nothing in that
# time fails the test (it says so), a slow one only makes it wait.
STORM_TIMEOUT = 120.0


def kill_mid_storm(
    server: Server,
    writers: list[Callable[[threading.Event], None]],
    going: Callable[[], bool],
    errors: list[str] | None = None,
    ready: Callable[[], bool] | None = None,
) -> None:
    """Run each of ``writers`` in a thread (each is given the event that tells it to stop) until ``going()`` (enough
    writes answered) and, if given, ``ready()`` (a state to kill in, e.g. an upload spilling); then SIGKILL the
    server with the writes in flight, stop and join the writers, and start the server again on the same data and
    port. Fails if a writer noted an error in ``errors`` or the storm never got going."""
    errors = [] if errors is None else errors
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(stop,), daemon=True) for w in writers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + STORM_TIMEOUT
    while not (going() and (ready is None or ready())) and not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop(kill=True)  # SIGKILL, mid-write
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert going(), f"the writers did not get going in {STORM_TIMEOUT:.0f} s"
    assert not any(t.is_alive() for t in threads), "a writer hung after the kill"
    server.start()  # same data, same port


def client(server_url: str, token: str, timeout: float = 30) -> httpx.Client:
    return httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                        verify=TLS)


def stalled_upload(url: str, token: str, sid: str, key: str, stop: threading.Event) -> None:
    """A PUT of ``key`` that sends 1 MiB and then waits for the kill: an upload certainly in progress then, which
    must leave nothing behind."""

    def body() -> Iterator[bytes]:
        for _ in range(4):
            yield os.urandom(256 * 1024)
        stop.wait(60)
        yield b"never acknowledged"

    with client(url, token, timeout=60) as c:
        try:
            c.put(rec_path(sid, key), content=body())
        except httpx.HTTPError:
            pass


def keys_of(c: httpx.Client, sid: str) -> list[str]:
    """Every key of a store, page after page."""
    listed: list[str] = []
    start = None
    while True:
        params = {"exclusiveStartKey": start} if start else {}
        d = c.get(f"/v2/key-value-stores/{sid}/keys", params=params).json()["data"]
        listed += [i["key"] for i in d["items"]]
        if not d["isTruncated"]:
            return listed
        start = d["nextExclusiveStartKey"]
