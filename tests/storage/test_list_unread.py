"""A listing reads nothing a user can make megabytes of, times the up to 1,000 resources of a page: not a store's
or a dataset's schema (each up to 4 MiB; list_stores, storage/base.py ``Store.schema_read``), and not a dataset's
``fields`` (2,000 keys of any length; ``datasets.info(fields=False)``). A page of 1,000 stores with 4 MiB schemas
read them all, 4 GB, though the list shows none of them (api/stores.py ``describe``)."""

from __future__ import annotations

from typing import Any

import pytest

from openkvs.storage import schemas
from openkvs.storage.base import DATASET, KVS, QUEUE, Storage

from .test_datasets import make_push, union

pytestmark = pytest.mark.anyio

LIST = dict(offset=0, limit=1000, desc=False, unnamed=True, ownership=None)


def big_schema(kind: str) -> dict[str, Any]:
    text = "d" * 1_000_000
    if kind == DATASET:
        return {"actorSpecification": 1, "title": "t", "description": text, "views": {}}
    return {"actorKeyValueStoreSchemaVersion": 1, "title": "t", "description": text}


async def test_a_listed_store_has_its_schema_neither_read_nor_parsed(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await storage.create_user("alice")
    bob = await storage.create_user("bob")
    made = {kind: await storage.create_store(alice.id, "big", big_schema(kind), "k", kind=kind) for kind in (KVS, DATASET)}
    plain = await storage.create_store(alice.id, "plain", None, "k")
    shared = await storage.create_store(bob.id, "shared", big_schema(KVS), "k")
    await storage.set_grant(shared.id, alice.id, False)
    queue = await storage.create_store(alice.id, "q", None, "k", kind=QUEUE)
    texts: list[str] = []  # every schema text that reached Python to be parsed
    parsed = schemas.parsed

    def watched(store_id: str, text: str | None) -> Any:
        if text is not None:
            texts.append(text)
        return parsed(store_id, text)

    monkeypatch.setattr(schemas, "parsed", watched)
    _, page = await storage.list_stores(alice.id, **LIST)
    assert [s.id for s in page] == [made[KVS].id, plain.id, shared.id]
    _, datasets = await storage.list_stores(alice.id, **LIST, kind=DATASET)
    _, queues = await storage.list_stores(alice.id, **LIST, kind=QUEUE)
    assert [s.id for s in datasets] == [made[DATASET].id] and [s.id for s in queues] == [queue.id]
    assert texts == []  # not selected: no text came back from the database
    for store in page + datasets + queues:
        # None whether or not it has one, and says so: nothing may take it for "no schema"
        assert store.schema is None and store.schema_read is False
    assert page[0].stats.record_count == 0 and page[0].url_signing_secret_key == "k"  # the rest is all there
    # read one by one, each has its schema again
    for kind, store in made.items():
        got = await storage.get_store(store.id)
        assert got is not None and got.schema_read is True and got.schema == big_schema(kind)
    found = await storage.look_up_store(alice.id, store_id=made[KVS].id)
    assert found.store.schema_read is True and found.store.schema == big_schema(KVS)
    got = await storage.get_store(plain.id)
    assert got is not None and got.schema_read is True and got.schema is None


async def test_dataset_counters_for_a_list_leave_out_fields(storage: Storage) -> None:
    alice = await storage.create_user("alice")
    sids = [(await storage.create_store(alice.id, None, None, "k", kind=DATASET)).id for _ in range(2)]
    long_key = "k" * 200  # (the longest a key of ``fields`` may be: storage/datasets.py MAX_FIELD_NAME)
    await storage.datasets.push(sids[0], make_push([{long_key: 1, "b": 2}, {"#c": 3}]), union)
    full = await storage.datasets.info(sids)
    assert full[sids[0]].fields == [long_key, "b", "#c"] and full[sids[1]].fields == []
    listed = await storage.datasets.info(sids, fields=False)
    assert listed[sids[0]].fields == [] and listed[sids[1]].fields == []
    a, b = listed[sids[0]], full[sids[0]]
    assert (a.item_count, a.clean_item_count, a.bytes) == (b.item_count, b.clean_item_count, b.bytes)
    assert (a.item_count, a.clean_item_count) == (2, 1) and a.bytes > 200
