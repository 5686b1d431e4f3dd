"""GET /v2/datasets/{id}/statistics (API-datasets.md 4.6) on every backend: the numbers a user sees, after each of
many pushes (concurrent ones too), are what the items pushed so far give by the contract's definition (an oracle
written here from the contract's text). Every push keeps them, so a call reads one row; a dataset whose items came
before they were kept (the column left NULL, as after the migration that added it) gets them by one scan, kept for
the next calls and pushes."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import DATABASE_URL

from . import assert_error, unique

PROPERTIES = ["price", "title", "tags", "meta", "ok", "never"]
SCHEMA = {
    "actorSpecification": 1,
    "fields": {
        "type": "object",
        "properties": {
            "price": {"type": ["number", "null"]},
            "title": {"type": ["string", "null"]},
            "tags": {"type": ["array", "null"]},
            "meta": {},
            "ok": {},
            "never": {},
        },
    },
}


def oracle(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Section 4.6 read literally: nullCount = items whose field is null, emptyCount = items without it, min/max
    over the other values measured as numbers / code points / array length / key count / booleans 1 and 0."""
    out = {}
    for name in PROPERTIES:
        measured = []
        for it in items:
            if name not in it or it[name] is None:
                continue
            v = it[name]
            if isinstance(v, bool):
                measured.append(int(v))
            elif isinstance(v, (int, float)):
                measured.append(v)
            else:
                measured.append(len(v))
        out[name] = {
            "min": min(measured) if measured else None,
            "max": max(measured) if measured else None,
            "nullCount": sum(1 for it in items if name in it and it[name] is None),
            "emptyCount": sum(1 for it in items if name not in it),
        }
    return out


def random_item(rnd: random.Random) -> dict[str, Any]:
    choices: dict[str, list[Any]] = {
        "price": [None, rnd.randint(-10**6, 10**6), rnd.uniform(-1e6, 1e6), 2**70, -0.0, 1e-7],
        "title": [None, "", "é" * rnd.randint(0, 40), "😀x", "a" * rnd.randint(0, 300)],
        "tags": [None, [], list(range(rnd.randint(0, 9)))],
        "meta": [None, {}, {f"k{i}": i for i in range(rnd.randint(0, 6))}, 7.5, "text", True, False, [1, 2]],
        "ok": [True, False, None, 3],
    }
    item = {name: rnd.choice(values) for name, values in choices.items() if rnd.random() < 0.8}
    if rnd.random() < 0.3:
        item["other"] = rnd.random()
    return item


def stats(c: httpx.Client, did: str) -> Any:
    r = c.get(f"/v2/datasets/{did}/statistics")
    assert r.status_code == 200, r.text
    return r.json()["data"]["fieldStatistics"]


def new_dataset(c: httpx.Client) -> str:
    r = c.post("/v2/datasets", params={"name": unique("st")}, json={"schema": SCHEMA})
    assert r.status_code == 201, r.text
    return r.json()["data"]["id"]


def test_statistics_follow_every_push(shared_server) -> None:
    rnd = random.Random(13)
    with shared_server.client() as c:
        did = new_dataset(c)
        assert stats(c, did) == oracle([])  # no items: zero counts, no min or max
        pushed: list[dict[str, Any]] = []
        for size in (1, 5, 0, 40, 1, 300, 2, 1200):
            batch = [random_item(rnd) for _ in range(size)]
            r = c.post(f"/v2/datasets/{did}/items", json=batch[0] if size == 1 else batch)
            assert r.status_code == 201, r.text
            pushed += batch
            assert stats(c, did) == oracle(pushed), size
        # a push refused by the schema changes nothing
        assert_error(c.post(f"/v2/datasets/{did}/items", json=[{"price": 10**9}, {"price": "x"}]), 400,
                     "schema-validation-error")
        assert stats(c, did) == oracle(pushed)
        # concurrent pushes: the statistics of all their items together, whatever the order
        batches = [[random_item(rnd) for _ in range(rnd.randint(1, 60))] for _ in range(12)]

        def push(batch: list[dict[str, Any]]) -> int:
            with shared_server.client() as c2:
                return c2.post(f"/v2/datasets/{did}/items", json=batch).status_code

        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(push, batches)) == {201}
        pushed += [it for b in batches for it in b]
        assert stats(c, did) == oracle(pushed)
        assert c.get(f"/v2/datasets/{did}").json()["data"]["itemCount"] == len(pushed)


def kept_column(server: Any, did: str, forget: bool = False) -> str | None:
    """The dataset's kept statistics as stored (``forget``: set to NULL first, which is what a dataset whose items
    were pushed before statistics were kept looks like)."""
    update = f"UPDATE dataset_counts SET field_stats = NULL WHERE store_id = '{did}'"
    select = f"SELECT field_stats FROM dataset_counts WHERE store_id = '{did}'"
    if server.backend.startswith("sqlite"):
        db = sqlite3.connect(server.data_dir / "openkvs.sqlite3", timeout=30)
        try:
            with db:
                if forget:
                    assert db.execute(update).rowcount == 1
                return db.execute(select).fetchone()[0]  # type: ignore[no-any-return]
        finally:
            db.close()
    sql = f"{update}; {select}" if forget else select
    out = subprocess.run(
        ["psql", DATABASE_URL, "-v", "ON_ERROR_STOP=1", "-qAtc",
         f'SET search_path = "{server.env["OPENKVS_DATABASE_SCHEMA"]}"; {sql}'],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout.strip() or None


def test_statistics_of_items_pushed_before_they_were_kept(shared_server) -> None:
    rnd = random.Random(14)
    with shared_server.client() as c:
        did = new_dataset(c)
        pushed = [random_item(rnd) for _ in range(2500)]
        assert c.post(f"/v2/datasets/{did}/items", json=pushed).status_code == 201
        assert kept_column(shared_server, did) is not None  # kept by the push
        assert kept_column(shared_server, did, forget=True) is None
        more = [random_item(rnd) for _ in range(30)]
        assert c.post(f"/v2/datasets/{did}/items", json=more).status_code == 201  # none kept: none added to
        assert kept_column(shared_server, did) is None
        pushed += more
        assert stats(c, did) == oracle(pushed)  # a scan, its result kept
        assert kept_column(shared_server, did) is not None
        assert stats(c, did) == oracle(pushed)
        more = [random_item(rnd) for _ in range(30)]
        assert c.post(f"/v2/datasets/{did}/items", json=more).status_code == 201  # added to the kept ones
        pushed += more
        assert stats(c, did) == oracle(pushed)
