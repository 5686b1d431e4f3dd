"""Prometheus metrics (``GET /metrics``), with the ``prometheus-client`` library.

One process: the library's default registry. Several (``--workers`` > 1): ``openkvs serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, each worker writes its values to
memory-mapped files there, and ``/metrics`` in any worker sums them (the library's multiprocess mode). The variable
must be set before ``prometheus_client`` is imported, which is why this module reads it at import and
``serve`` sets it first.

Per request the cost is a dict lookup for the labelled children (cached here, not ``.labels()`` each time), one
counter increment and one histogram observation. What is counted where:

- requests, latency, 429s, ZIP bytes and open downloads: openkvs/observe.py, from what each request sent;
- storage errors: ApiMiddleware, where a storage error becomes an API error (``storage_error``);
- connections refused before any request (over the per-IP cap): openkvs/server.py.
"""

from __future__ import annotations

import os
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

disable_created_metrics()  # the *_created series only double the output; Prometheus does not need them

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Record requests take a millisecond or less; ZIP downloads of whole stores minutes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

REQUESTS = Counter(
    "openkvs_http_requests", "HTTP requests answered, by route template, method and status.",
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
STORAGE_ERRORS = Counter(
    "openkvs_storage_errors", "Storage errors that reached a request, by kind (StorageUnavailable, StorageFull...).",
    ["kind"],
)


class _Children:
    """``metric.labels(...)`` takes a lock and builds a key on every call: the children, made once per label set."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], Any] = {}
        self.latency: dict[tuple[str, str], Any] = {}
        self.body: dict[str, Any] = {}
        self.limited: dict[str, Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float, sent: int) -> None:
        key = (route, method, status)
        counter = self.requests.get(key)
        if counter is None:
            counter = self.requests[key] = REQUESTS.labels(route, method, str(status))
        counter.inc()
        hist = self.latency.get(key[:2])
        if hist is None:
            hist = self.latency[key[:2]] = LATENCY.labels(route, method)
        hist.observe(seconds)
        if sent:
            body = self.body.get(route)
            if body is None:
                body = self.body[route] = RESPONSE_BYTES.labels(route)
            body.inc(sent)
        if status == 429:
            self.rate_limited(route)

    def rate_limited(self, route: str) -> None:
        child = self.limited.get(route)
        if child is None:
            child = self.limited[route] = RATE_LIMITED.labels(route)
        child.inc()


children = _Children()


def storage_error(exc: BaseException) -> None:
    STORAGE_ERRORS.labels(type(exc).__name__).inc()


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition() -> bytes:
    """The text format of every metric (all workers' in multiprocess mode)."""
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

    mode = state(request).settings.metrics
    if mode == "off":
        raise errors.PageNotFound()
    if mode == "token":
        access.require_user(await access.caller(request))
    return Response(exposition(), 200, {"Cache-Control": "no-store"}, media_type=CONTENT_TYPE)
