"""Prometheus metrics (``GET /metrics``), with the ``prometheus-client`` library.

One process: the library's default registry. Several (``--workers`` > 1): ``openkvs serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, each worker writes its values to
memory-mapped files there, and ``/metrics`` in any worker sums them (the library's multiprocess mode). The variable
must be set before ``prometheus_client`` is imported, which is why this module reads it at import and
``serve`` sets it first.

Per request the cost is a few dict and list operations (``_Pending``). What is counted where:

- requests, latency, 429s, ZIP bytes and open downloads: openkvs/observe.py, from what each request sent;
- storage errors: ApiMiddleware, where a storage error becomes an API error (``storage_error``);
- storage retries, garbage collection: the storage backends, where they happen;
- PostgreSQL pool connections, the SQLite writer's queue: sampled from the storage as ``/metrics`` is read (with
  ``--workers``, each worker's value as of the last ``/metrics`` it answered);
- connections refused before any request (over the per-IP cap): openkvs/server.py.
- what is stored (resources and bytes by kind, records): counted by storage as ``/metrics`` is read, at most every
  TOTALS_SECONDS.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from openkvs.storage.base import KINDS

disable_created_metrics()  # the *_created series only double the output; Prometheus does not need them

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Record requests take a millisecond or less; ZIP downloads of whole stores minutes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
LATENCY_NS = tuple(round(b * 1e9) for b in LATENCY_BUCKETS)  # the same bounds in nanoseconds (integers)

REQUESTS = Counter(
    "openkvs_http_requests", "HTTP requests, by route template, method and status (0: the client went away before "
    "any answer).",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "openkvs_http_request_duration_seconds", "Time from a request's head to its response's last byte.",
    ["route", "method"], buckets=LATENCY_BUCKETS,
)
RESPONSE_BYTES = Counter(
    "openkvs_http_response_body_bytes", "Response body bytes sent, by route template.", ["route"]
)
ZIP_BYTES = Counter("openkvs_zip_bytes_sent", "Bytes of ZIP downloads (whole-store archives) sent.")
OPEN_DOWNLOADS = Gauge(
    "openkvs_downloads_open", "ZIP downloads being sent now.", multiprocess_mode="livesum"
)
RATE_LIMITED = Counter(
    "openkvs_rate_limited", "Requests and connections refused with 429 (rate limits, download and connection caps).",
    ["route"],
)
STORAGE_RETRIES = Counter(
    "openkvs_storage_retries", "Storage operations tried again: a PostgreSQL read after a lost connection "
    "(connection), a transaction PostgreSQL aborted as a deadlock victim (deadlock).", ["reason"],
)
GC_RUNS = Counter("openkvs_gc_runs", "Garbage-collection passes over the data of replaced and deleted records.")
GC_FREED_BYTES = Counter(
    "openkvs_gc_freed_bytes", "Bytes of replaced and deleted records' data freed by garbage collection (files on "
    "SQLite, chunks on PostgreSQL; not objects in a bucket, whose sizes S3 does not tell on deletion).",
)
STORAGE_CONNECTIONS = Gauge(
    "openkvs_postgres_connections", "PostgreSQL connections by pool (main, uploads, snapshots) and state (busy, "
    "idle), as /metrics was read.", ["pool", "state"], multiprocess_mode="livesum",
)
WRITER_QUEUE = Gauge(
    "openkvs_sqlite_writer_queue", "SQLite writes running or waiting for the one writer, as /metrics was read.",
    multiprocess_mode="livesum",
)
# What is stored: counted by storage queries (a scan of the records' index), so kept TOTALS_SECONDS between counts.
RESOURCES = Gauge(
    "openkvs_resources", "Key-value stores, datasets and request queues stored, by kind (kvs, dataset, queue).",
    ["kind"], multiprocess_mode="mostrecent",
)
STORED_BYTES = Gauge(
    "openkvs_stored_bytes", "Bytes stored, by kind of resource (from the resources' storageBytes, which may lag a "
    "few seconds).", ["kind"], multiprocess_mode="mostrecent",
)
RECORDS = Gauge("openkvs_records", "Key-value store records stored.", multiprocess_mode="mostrecent")
TOTALS_SECONDS = 60.0
STORAGE_ERRORS = Counter(
    "openkvs_storage_errors", "Storage errors that reached a request, by kind (StorageUnavailable, StorageFull...).",
    ["kind"],
)


class _Pending:
    """Per request, ``prometheus_client``'s objects cost more than the rest of the observing (a lock per value,
    a Python loop over the buckets, mmap writes in multiprocess mode: about 10 us for a counter and a histogram
    on this machine). So requests are counted in plain dicts here, in integers (a count in the request's latency
    bucket, bytes and nanoseconds added), and moved into those objects in bulk: before every exposition in this
    process and at most ``FLUSH_SECONDS`` after a request (other workers' counts reach ``/metrics`` within that).
    Moving a histogram's counts in bulk adds to its ``_buckets``/``_sum`` values, as its ``observe`` does one at a
    time (the library has no bulk call; tests/test_metrics_pending.py checks the totals)."""

    FLUSH_SECONDS = 1.0

    def __init__(self) -> None:
        # (route, method, status) -> [body bytes, nanoseconds, count per latency bucket (the last: +Inf)...]
        self.counts: dict[tuple[str, str, int], list[int]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def observe(self, route: str, method: str, status: int, ns: int, sent: int) -> None:
        """One request that took ``ns`` nanoseconds and sent ``sent`` body bytes."""
        key = (route, method, status)
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = [0] * (len(LATENCY_NS) + 3)
        row[0] += sent  # (indexes from the start: a negative one takes a slower way in the interpreter)
        row[1] += ns
        row[2 + bisect_left(LATENCY_NS, ns)] += 1  # the first bucket with ns <= bound, as observe's seconds <= bound
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        counts, self.counts = self.counts, {}
        for (route, method, status), row in counts.items():
            buckets = row[2:]
            requests = sum(buckets)
            REQUESTS.labels(route, method, str(status)).inc(requests)
            if row[0]:
                RESPONSE_BYTES.labels(route).inc(row[0])
            if status == 429:
                RATE_LIMITED.labels(route).inc(requests)
            hist = LATENCY.labels(route, method)
            hist._sum.inc(row[1] / 1e9)
            for bucket, n in zip(hist._buckets, buckets, strict=True):
                if n:
                    bucket.inc(n)


pending = _Pending()


def storage_error(exc: BaseException) -> None:
    STORAGE_ERRORS.labels(type(exc).__name__).inc()


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition() -> bytes:
    """The text format of every metric (all workers' in multiprocess mode)."""
    pending.flush()
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def endpoint(request: Any) -> Any:
    """``GET /metrics``: with ``--metrics token`` (the default) any valid API token may read it (Prometheus sends
    one as ``Authorization: Bearer``); ``public``: anyone; ``off``: 404 as for any unknown path. The metrics hold
    counts by route template only: no store IDs, names or keys."""
    from starlette.responses import Response

    from openkvs import access, errors
    from openkvs.api.common import state

    st = state(request)
    mode = st.settings.metrics
    if mode == "off":
        raise errors.PageNotFound()
    if mode == "token":
        access.require_user(await access.caller(request))
    st.storage.sample_metrics()
    await _totals.sample(st.storage)
    return Response(exposition(), 200, {"Cache-Control": "no-store"}, media_type=CONTENT_TYPE)


class _Totals:
    """The stored totals, counted at most every TOTALS_SECONDS however often /metrics is read (Prometheus polls
    every few seconds; the count scans the records' index), and by one request at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.counted_at: float | None = None
        self.lock = asyncio.Lock()

    async def sample(self, storage: Any) -> None:
        async with self.lock:
            now = self.clock()
            if self.counted_at is not None and now - self.counted_at < TOTALS_SECONDS:
                return
            totals = await storage.stored_totals()
            self.counted_at = now
        for kind in KINDS:
            RESOURCES.labels(kind).set(totals.resources.get(kind, 0))
            STORED_BYTES.labels(kind).set(totals.bytes.get(kind, 0))
        RECORDS.set(totals.records)


_totals = _Totals()
