"""Request queues through real `openkvs serve` processes: two nodes on one PostgreSQL schema handing out one
queue's requests (each to exactly one client), and a server killed with SIGKILL mid-crawl (every acknowledged add
and mark survives; the dead crawl's locks lapse and the crawl finishes with exact counts), on both backends."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import Server, _release_schema, free_port, make_server

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.server_process, pytest.mark.timeout(600)]
Q = "/v2/request-queues"


def reqs(n: int) -> list[dict[str, str]]:
    return [{"url": f"http://n/{i}", "uniqueKey": f"http://n/{i}"} for i in range(n)]


def crawl(url: str, token: str, qid: str, key: str, handed: list[tuple[str, str]], lock_secs: int = 600) -> None:
    """Take, and mark handled, until nothing is pending or locked; note each hand-out."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while True:
            r = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": lock_secs, "limit": 5, "clientKey": key})
            assert r.status_code == 201, r.text
            data = r.json()["data"]
            if not data["items"]:
                if not data["queueHasLockedRequests"]:
                    return
                time.sleep(0.05)
                continue
            for item in data["items"]:
                handed.append((item["id"], key))
                body = {"url": item["url"], "uniqueKey": item["uniqueKey"], "handledAt": "2026-12-01T00:00:00Z"}
                r = c.put(f"{Q}/{qid}/requests/{item['id']}", params={"clientKey": key}, json=body)
                assert r.status_code == 200, r.text


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    a = make_server(tmp_path, "postgres", "--rate-limits", "off")
    port = free_port()
    b = Server(f"http://127.0.0.1:{port}", a.token, a.data_dir, dict(a.env), ["--port", str(port), *a.args[2:]])
    try:
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()
        _release_schema(a.env["OPENKVS_DATABASE_SCHEMA"])


@pytest.mark.postgres
def test_two_nodes_hand_each_request_out_once(two_nodes: tuple[Server, Server]) -> None:
    a, b = two_nodes
    with a.client() as c:
        qid = c.post(Q, params={"name": "two-nodes"}).json()["data"]["id"]
    n = 120
    answers: list[Any] = []

    def add(node: Server, key: str) -> None:  # every client adds every request, in batches, at once
        with node.client() as c:
            todo = reqs(n)
            for i in range(0, n, 25):
                r = c.post(f"{Q}/{qid}/requests/batch", params={"clientKey": key}, json=todo[i:i + 25])
                assert r.status_code == 201, r.text
                answers.extend(r.json()["data"]["processedRequests"])

    threads = [threading.Thread(target=add, args=(node, f"add-{i}")) for i, node in enumerate([a, b] * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    new = Counter(p["uniqueKey"] for p in answers if not p["wasAlreadyPresent"])
    assert new == Counter({r["uniqueKey"]: 1 for r in reqs(n)})  # each created exactly once, over both nodes

    handed: list[tuple[str, str]] = []
    threads = [threading.Thread(target=crawl, args=(node.url, a.token, qid, f"crawler-{i}", handed))
               for i, node in enumerate([a, b] * 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = Counter(rid for rid, _ in handed)
    assert len(ids) == n and set(ids.values()) == {1}  # every request to exactly one client
    assert len({k for _, k in handed}) > 1
    with b.client() as c:
        q = c.get(f"{Q}/{qid}").json()["data"]
    assert (q["totalRequestCount"], q["handledRequestCount"], q["pendingRequestCount"]) == (n, n, 0)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_server_killed_mid_crawl(tmp_path: Path, backend: str) -> None:
    s = make_server(tmp_path, backend, "--rate-limits", "off")
    try:
        with s.client() as c:
            qid = c.post(Q, params={"name": "killed"}).json()["data"]["id"]
            added = 0
            for i in range(0, 200, 25):
                r = c.post(f"{Q}/{qid}/requests/batch", json=reqs(200)[i:i + 25])
                assert r.status_code == 201
                added += 25
        acknowledged: list[str] = []
        stop = threading.Event()

        def work() -> None:
            with httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.token}"}, timeout=5) as c:
                while not stop.is_set():
                    try:
                        r = c.post(f"{Q}/{qid}/head/lock", params={"lockSecs": 3, "limit": 5, "clientKey": "w"})
                        for item in r.json()["data"]["items"]:
                            body = {"url": item["url"], "uniqueKey": item["uniqueKey"],
                                    "handledAt": "2026-12-01T00:00:00Z"}
                            if c.put(f"{Q}/{qid}/requests/{item['id']}", json=body).status_code == 200:
                                acknowledged.append(item["id"])
                    except (httpx.HTTPError, ValueError, KeyError):
                        return

        worker = threading.Thread(target=work)
        worker.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        s.stop(kill=True)  # SIGKILL, mid-crawl
        stop.set()
        worker.join(30)
        marked = set(acknowledged)
        assert len(marked) >= 60
        s.start()
        with s.client() as c:
            q = c.get(f"{Q}/{qid}").json()["data"]
            assert q["totalRequestCount"] == added
            assert q["handledRequestCount"] >= len(marked)  # every acknowledged mark survived
            for rid in marked:
                assert "handledAt" in c.get(f"{Q}/{qid}/requests/{rid}").json()["data"]
        handed: list[tuple[str, str]] = []
        crawl(s.url, s.token, qid, "after", handed)  # the dead crawl's locks (3 s) lapse; this one finishes
        assert not marked & {rid for rid, _ in handed}  # nothing handled is handed out again
        with s.client() as c:
            q = c.get(f"{Q}/{qid}").json()["data"]
        assert (q["totalRequestCount"], q["handledRequestCount"], q["pendingRequestCount"]) == (added, added, 0)
    finally:
        s.stop()
        if backend == "postgres":
            _release_schema(s.env["OPENKVS_DATABASE_SCHEMA"])
