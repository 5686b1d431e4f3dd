"""Pushes are atomic, durable and dense (API-datasets.md 4.4), with real processes:

    * kill -9 in a storm of pushes: every acknowledged push is there after the restart, whole and in order; no push
      is there in part; the indexes are dense and itemCount counts exactly what is stored
    * several client processes pushing at once, through two nodes on one PostgreSQL (and through one SQLite
      server): nothing lost, duplicated or reordered within a push, each writer's pushes in the order it made them
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from functools import partial

import httpx
import pytest

from tests.api.test_nodes import second_node
from tests.conftest import _release_schema, make_server

from . import unique
from .crash import client, kill_mid_storm

pytestmark = pytest.mark.server_process

WRITERS = 6
# each writer's push size: one packed row or several (storage/datasets.py ITEMS_PER_ROW, 128), ending anywhere in one
BATCHES = [50, 130, 300, 40, 257, 90]


def storm(url: str, token: str, did: str, w: int, acked: list[tuple[int, int]], stop: threading.Event) -> None:
    with client(url, token) as c:
        b = 0
        while not stop.is_set():
            items = [{"w": w, "b": b, "k": k, "pad": "x" * 200} for k in range(BATCHES[w])]
            try:
                r = c.post(f"/v2/datasets/{did}/items", json=items)
            except httpx.HTTPError:
                return  # the server died under us: this push is unknown, neither acked nor refused
            if r.status_code == 201:
                acked.append((w, b))
            b += 1


def runs(items: list[dict]) -> dict[tuple[int, int], int]:
    """Each push's (w, b) -> the index its first item landed at; asserts every push is one whole, ordered run."""
    first: dict[tuple[int, int], int] = {}
    i = 0
    while i < len(items):
        key = (items[i]["w"], items[i]["b"])
        size = BATCHES[key[0]]
        assert key not in first, f"push {key} appears twice"
        assert [(x["w"], x["b"], x["k"]) for x in items[i : i + size]] == [(*key, k) for k in range(size)], i
        first[key] = i
        i += size
    return first


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_acknowledged_pushes_survive_kill_9(tmp_path, start_server, backend):
    s = start_server(tmp_path, backend, "--rate-limits", "off")
    with s.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("crash")}).json()["data"]["id"]
    acked: list[tuple[int, int]] = []
    writers = [partial(storm, s.url, s.token, did, w, acked) for w in range(WRITERS)]
    kill_mid_storm(s, writers, lambda: len(acked) >= 40)  # SIGKILL, pushes in flight
    with s.client() as c:
        info = c.get(f"/v2/datasets/{did}").json()["data"]
        items = [json.loads(line) for line in c.get(f"/v2/datasets/{did}/items", params={"format": "jsonl"}).text.splitlines()]
    assert info["itemCount"] == len(items)  # dense: every index up to itemCount holds an item
    stored = runs(items)  # whole pushes only, each in order
    missing = [a for a in acked if a not in stored]
    assert not missing, missing
    for w in range(WRITERS):  # a writer's pushes in the order it made them (it waited for each answer)
        mine = sorted((b, i) for (ww, b), i in stored.items() if ww == w)
        assert [i for _, i in mine] == sorted(i for _, i in mine)


WRITER = textwrap.dedent(
    """
    import json, sys, httpx
    urls, token, did, w, pushes, size = json.loads(sys.argv[1])
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for b in range(pushes):
            items = [{"w": w, "b": b, "k": k} for k in range(size)]
            r = c.post(f"{urls[b % len(urls)]}/v2/datasets/{did}/items", json=items)
            assert r.status_code == 201, r.text
    """
)


def push_from_processes(urls: list[str], token: str, did: str, processes: int, pushes: int) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, json.dumps([urls, token, did, w, pushes, BATCHES[w]])])
        for w in range(processes)
    ]
    for p in procs:
        assert p.wait(300) == 0


def check_dense(url: str, token: str, did: str, processes: int, pushes: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        items = c.get(f"/v2/datasets/{did}/items").json()
        assert c.get(f"/v2/datasets/{did}").json()["data"]["itemCount"] == len(items) == pushes * sum(BATCHES[:processes])
    stored = runs(items)
    assert sorted(stored) == sorted((w, b) for w in range(processes) for b in range(pushes))
    for w in range(processes):
        order = [stored[(w, b)] for b in range(pushes)]
        assert order == sorted(order), w


def test_concurrent_processes_on_sqlite(tmp_path, start_server):
    s = start_server(tmp_path, "sqlite", "--rate-limits", "off")
    with s.client() as c:
        did = c.post("/v2/datasets", params={"name": unique("conc")}).json()["data"]["id"]
    push_from_processes([s.url], s.token, did, processes=4, pushes=25)
    check_dense(s.url, s.token, did, 4, 25)


@pytest.mark.postgres
def test_concurrent_processes_through_two_nodes(tmp_path):
    a = make_server(tmp_path, "postgres", "--rate-limits", "off")
    try:
        b = second_node(a)
        try:
            with a.client() as c:
                did = c.post("/v2/datasets", params={"name": unique("nodes")}).json()["data"]["id"]
            push_from_processes([a.url, b.url], a.token, did, processes=4, pushes=25)
            check_dense(b.url, a.token, did, 4, 25)
        finally:
            b.stop()
    finally:
        a.stop()
        _release_schema(a.env["OPENKVS_DATABASE_SCHEMA"])
