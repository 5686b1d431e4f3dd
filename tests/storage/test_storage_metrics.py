"""What the storage tells /metrics (openkvs/metrics.py): garbage-collection passes and the bytes they free, and the
gauges sampled as /metrics is read (the SQLite writer's queue, PostgreSQL's pool connections)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from openkvs.storage.base import Storage

from .conftest import Body, chunked

pytestmark = pytest.mark.anyio

BIG = 300 * 1024  # spilled to a file on SQLite, several chunks on PostgreSQL


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_garbage_collection_counts_its_passes_and_the_bytes_it_frees(storage: Storage) -> None:
    user = await storage.create_user("gc-metrics")
    store = await storage.create_store(user.id, "gc", None, "k")
    await storage.put_record(store.id, "k", Body(chunked(b"a" * BIG)), "application/octet-stream", None)
    await storage.put_record(store.id, "k", Body(chunked(b"b" * 2 * BIG)), "application/octet-stream", None)
    runs, freed = value("openkvs_gc_runs_total"), value("openkvs_gc_freed_bytes_total")
    assert await storage.collect_garbage(grace=0) >= 1
    assert value("openkvs_gc_runs_total") == runs + 1
    # the replaced record's data, not the new one's; an object in a bucket is not counted (S3's DeleteObjects
    # tells no sizes, and the garbage row keeps none)
    expected = 0 if getattr(storage, "blob_store", None) is not None else BIG
    assert value("openkvs_gc_freed_bytes_total") - freed == expected
    assert await storage.collect_garbage(grace=0) == 0
    assert value("openkvs_gc_freed_bytes_total") - freed == expected


async def test_connection_gauges_are_sampled_on_demand(storage: Storage) -> None:
    await storage.create_user("gauges")
    storage.sample_metrics()
    if type(storage).__name__.startswith("SQLite"):
        assert value("openkvs_sqlite_writer_queue") == 0  # nothing being written now
    else:
        # what open() started in the background (the ZIP headers' fill, a first stats flush) may hold a connection
        # for a moment: sample until it is back, as a scrape a little later would
        for _ in range(200):
            idle = value("openkvs_postgres_connections", pool="main", state="idle")
            busy = value("openkvs_postgres_connections", pool="main", state="busy")
            if busy == 0:
                break
            await asyncio.sleep(0.05)
            storage.sample_metrics()
        assert idle >= 1 and busy == 0, (idle, busy)
