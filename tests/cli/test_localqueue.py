"""openkvs import / export of request queues in Crawlee's layout: what crawlee's own FileSystemStorageClient wrote
(requests added, one at the front, some handled) goes in with each request's fields and handled state, in the
order Crawlee would have taken them, and comes out as files Crawlee reads back: the same requests, in that order."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from .helpers import run

pytest.importorskip("crawlee")

FIELDS = ("unique_key", "url", "method", "payload", "headers", "user_data", "retry_count", "no_retry", "loaded_url")


def _configuration(storage: Path) -> Any:
    from crawlee.configuration import Configuration

    return Configuration(storage_dir=str(storage), purge_on_start=False)


async def _open(storage: Path, name: str) -> Any:
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import RequestQueue

    return await RequestQueue.open(name=name, storage_client=FileSystemStorageClient(),
                                   configuration=_configuration(storage))


def crawlee_crawl(storage: Path, name: str, *, save_state: bool) -> None:
    """A crawler's queue as Crawlee leaves it: requests added (a POST with a payload, labels in userData, one at the
    front), the first two it took handled, one taken and given back. ``save_state``: Crawlee saved the queue's
    order in its state record, as it does now and then during a crawl."""
    from crawlee import Request

    async def crawl() -> None:
        rq = await _open(storage, name)
        await rq.add_requests([
            "https://example.com/1",
            Request.from_url("https://example.com/form", method="POST", payload=b'{"q": "h\xc3\xa9"}',
                             headers={"content-type": "application/json"}, user_data={"label": "FORM"}),
            *(f"https://example.com/page/{i}" for i in range(2, 40)),
            Request.from_url("https://example.com/same", unique_key="custom-key", user_data={"depth": 2}),
        ])
        await rq.add_request("https://example.com/urgent", forefront=True)
        for _ in range(2):
            await rq.mark_request_as_handled(await rq.fetch_next_request())
        taken = await rq.fetch_next_request()
        await rq.reclaim_request(taken)
        await rq.add_request("https://example.com/urgent-2", forefront=True)  # (its file the last written)
        if save_state:
            await rq._client._state.persist_state()

    asyncio.run(crawl())


def crawlee_requests(storage: Path, name: str) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    """What Crawlee takes from its queue ``name`` under ``storage``, in the order it takes them (each request's
    fields), and every request's handled state as Crawlee answers it for each uniqueKey taken or given."""

    async def take() -> tuple[list[dict[str, Any]], dict[str, bool]]:
        rq = await _open(storage, name)
        taken = []
        while (request := await rq.fetch_next_request()) is not None:
            taken.append(request.model_dump(include=set(FIELDS)))
        handled = {}
        for path in (storage / "request_queues" / name).glob("*.json"):
            if path.name != "__metadata__.json":
                from crawlee import Request

                key = Request.model_validate_json(path.read_text()).unique_key
                got = await rq.get_request(key)
                handled[key] = got is not None and got.handled_at is not None
        return taken, handled

    return asyncio.run(take())


def api_requests(server: Any, queue: str) -> dict[str, dict[str, Any]]:
    with server.client() as c:
        items = c.get(f"/v2/request-queues/{queue}/requests", params={"limit": 10000}).json()["data"]["items"]
    return {r["uniqueKey"]: r for r in items}


def api_head(server: Any, queue: str) -> list[str]:
    with server.client() as c:
        return [i["uniqueKey"] for i in c.get(f"/v2/request-queues/{queue}/head",
                                               params={"limit": 1000}).json()["data"]["items"]]


def test_an_export_counts_as_a_client_of_the_queue(shared_server: Any, tmp_path: Path) -> None:
    """What the README says: the export reads the head and the requests without a clientKey, which the contract
    counts as a client, so a crawler's queue says hadMultipleClients once it was exported."""
    name = f"counted-{shared_server.backend.replace('+', '-')}"
    with shared_server.client() as c:
        queue = c.post("/v2/request-queues", params={"name": name}).json()["data"]["id"]
        added = c.post(f"/v2/request-queues/{queue}/requests", params={"clientKey": "crawler"},
                       json={"url": "https://example.com/a", "uniqueKey": "a"})
        assert added.status_code == 201, added.text

        def multiple() -> bool:
            head = c.get(f"/v2/request-queues/{queue}/head", params={"clientKey": "crawler"}).json()["data"]
            return bool(head["hadMultipleClients"])

        assert not multiple()
        run(shared_server, "export", "--queue", f"~{name}", str(tmp_path / "out"), "-q")
        assert multiple()


@pytest.mark.parametrize("save_state", [True, False], ids=["state saved", "no state"])
def test_crawlee_queues_round_trip_through_import_and_export(shared_server: Any, tmp_path: Path,
                                                             save_state: bool) -> None:
    name = f"crawl-{shared_server.backend.replace('+', '-')}-{'state' if save_state else 'times'}"
    storage = tmp_path / "storage"
    crawlee_crawl(storage, name, save_state=save_state)
    shutil.copytree(storage, tmp_path / "oracle")  # Crawlee's own reading, from a copy it may change
    order, handled = crawlee_requests(tmp_path / "oracle", name)
    assert len(order) == 41 and sum(handled.values()) == 2  # (the test's own premises)
    assert order[0]["url"].endswith("urgent-2") or not save_state  # (first with its state: mtimes say last)

    out = run(shared_server, "import", str(storage), "-q")
    assert f"-> ~{name}: added 43 requests (2 of them handled), 0 already there" in out.stdout, out.stdout
    stored = api_requests(shared_server, f"~{name}")
    assert {k: r.get("handledAt") is not None for k, r in stored.items()} == handled
    form = stored["https://example.com/form"]
    assert (form["method"], form["payload"], form["userData"], form["headers"]) == (
        "POST", '{"q": "hé"}', {"label": "FORM"}, {"content-type": "application/json"})
    assert stored["custom-key"]["url"] == "https://example.com/same"
    head = api_head(shared_server, f"~{name}")
    if save_state:
        assert head == [r["unique_key"] for r in order]
    else:  # Crawlee itself, without its state, takes them in the order its folder lists them: any order
        assert sorted(head) == sorted(r["unique_key"] for r in order)

    again = run(shared_server, "import", str(storage / "request_queues" / name), "-q")
    assert "added 0 requests (0 of them handled), 43 already there" in again.stdout, again.stdout

    run(shared_server, "export", "--queue", f"~{name}", str(tmp_path / "out"), "-q")
    exported, exported_handled = crawlee_requests(tmp_path / "out", name)
    assert exported_handled == handled
    assert [r["unique_key"] for r in exported] == head  # the export keeps the order openkvs has
    assert sorted(exported, key=str) == sorted(order, key=str)


def test_the_older_layout_of_the_javascript_crawlee_imports_in_its_order(sqlite_server: Any, tmp_path: Path) -> None:
    """@crawlee/memory-storage (and crawlee 0.x) wrote each request as {"id", "orderNo", ..., "json"}: the whole
    request as a JSON text, its place in orderNo (forefront negative, null once handled). Hand-written here as
    that code writes it, since no JavaScript Crawlee runs in these tests."""
    folder = tmp_path / "storage" / "request_queues" / "older"
    folder.mkdir(parents=True)
    (folder / "__metadata__.json").write_text(json.dumps({"id": "Q1", "name": "older", "totalRequestCount": 4}))
    requests = [  # (orderNo, request)
        (1733400000300, {"url": "https://a.example/late", "uniqueKey": "late", "method": "GET", "retryCount": 1,
                         "userData": {"label": "L"}, "errorMessages": ["timeout"]}),
        (1733400000100, {"url": "https://a.example/early", "uniqueKey": "early", "method": "POST",
                         "payload": "a=1", "userData": {}}),
        (-1733400000200, {"url": "https://a.example/front", "uniqueKey": "front", "method": "GET"}),
        (None, {"url": "https://a.example/done", "uniqueKey": "done", "method": "GET",
                "handledAt": "2024-12-05T10:00:00.000Z"}),
    ]
    for i, (order_no, request) in enumerate(requests):
        request = {"id": f"id{i}", **request}
        (folder / f"id{i}.json").write_text(json.dumps({
            "id": request["id"], "orderNo": order_no, "url": request["url"], "uniqueKey": request["uniqueKey"],
            "method": request["method"], "retryCount": request.get("retryCount", 0), "json": json.dumps(request)}))
    out = run(sqlite_server, "import", str(folder), "-q")
    assert "added 4 requests (1 of them handled), 0 already there (in order: orderNo)" in out.stdout, out.stdout
    assert api_head(sqlite_server, "~older") == ["front", "early", "late"]
    stored = api_requests(sqlite_server, "~older")
    assert stored["late"]["errorMessages"] == ["timeout"] and stored["late"]["retryCount"] == 1
    assert (stored["early"]["method"], stored["early"]["payload"]) == ("POST", "a=1")
    assert stored["done"]["handledAt"] == "2024-12-05T10:00:00.000Z"


@pytest.mark.parametrize("queue_first", [True, False], ids=["queue first", "store first"])
def test_a_queue_and_the_default_store_export_into_one_folder_in_either_order(
    shared_server: Any, tmp_path: Path, queue_first: bool
) -> None:
    """Crawlee keeps a queue's order in its default key-value store (key_value_stores/default/__RQ_STATE_<id>), the
    only place it reads it from: a store named "default" exported after a queue into the same DIR was refused (its
    folder held files already), though the other order worked. Both orders give Crawlee the queue's order and the
    store's records."""
    name = f"with-default-{shared_server.backend.replace('+', '-')}-{int(queue_first)}"
    with shared_server.client() as c:
        queue = c.post("/v2/request-queues", params={"name": name}).json()["data"]["id"]
        for key, forefront in (("a", False), ("b", False), ("front", True)):
            added = c.post(f"/v2/request-queues/{queue}/requests", params={"forefront": str(forefront).lower()},
                           json={"url": f"https://example.com/{key}", "uniqueKey": key})
            assert added.status_code == 201, added.text
        assert c.post("/v2/key-value-stores", params={"name": "default"}).status_code in (200, 201)
        assert c.put("/v2/key-value-stores/~default/records/INPUT", json={"start": 1}).status_code == 201
    out = tmp_path / "out"
    exports = [("export", "--queue", f"~{name}", str(out), "-q"), ("export", "~default", str(out), "-q")]
    for args in exports if queue_first else exports[::-1]:
        done = run(shared_server, *args, check=False)
        assert done.returncode == 0, done.stderr
    store = out / "key_value_stores" / "default"
    names = {p.name for p in store.iterdir()}  # (and the order records other tests' imports put in ~default)
    assert {"INPUT", "INPUT.__metadata__.json", "__RQ_STATE_" + queue, f"__RQ_STATE_{queue}.__metadata__.json",
            "__metadata__.json"} <= names, names
    assert json.loads((store / "INPUT").read_text()) == {"start": 1}
    assert [r["unique_key"] for r in crawlee_requests(out, name)[0]] == ["front", "a", "b"]
    assert sorted(p.name for p in (out / "key_value_stores").iterdir()) == ["default"]  # (no partial left)
